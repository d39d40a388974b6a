# bench/plot.gp - the benchmark's two PNGs, from the data bench/bench.py
# writes into its work directory:
#   gnuplot -e 'vars="WORKDIR/plot-vars.gp"' bench/plot.gp
# plot-vars.gp sets datadir, outdir, prefix, the panel titles T[] and C[]
# and the number of series per CDF panel S[].
load vars

set terminal pngcairo size 1200,680 font "sans,9"
set output outdir."/".prefix."-time.png"
set multiplot layout 2,3 title "Time to finish, median of the runs (log scale; p: = pagein)"
set style fill solid 0.75 border -1
set boxwidth 0.6
set logscale y
set format y "%g"
set grid ytics
set xtics rotate by 30 right nomirror font ",8"
set offsets 0.5, 0.5, 0, 0
unset key
do for [i=1:npanels] {
	set title T[i]
	plot datadir."/plot-time.dat" index (i-1) using 0:2:xtic(1) with boxes lc i, \
	     "" index (i-1) using 0:2:(sprintf("%.2f", $2)) with labels offset 0,0.7 font ",7"
}
unset multiplot

set output outdir."/".prefix."-latency-cdf.png"
set terminal pngcairo size 1200,420 font "sans,9"
set multiplot layout 1,3 title "First-touch latency CDF (the median run of each configuration)"
unset logscale y
set logscale x
set format x "10^{%L}"
set offsets 0, 0, 0, 0
set xtics rotate by 0 center nomirror
set xlabel "microseconds"
set ylabel "fraction of first touches"
set yrange [0:1]
set grid xtics ytics
set key bottom right font ",8"
do for [i=1:ncdf] {
	set title C[i]
	plot for [j=0:S[i]-1] sprintf("%s/plot-cdf-%d.dat", datadir, i) index j using 1:2 \
		with lines lw 2 title columnheader(1)
}
unset multiplot
