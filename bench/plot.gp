# bench/plot.gp - the benchmark's two PNGs, from the data bench/bench.py
# writes into its work directory:
#   gnuplot -e 'vars="WORKDIR/plot-vars.gp"' bench/plot.gp
# plot-vars.gp sets datadir, outdir, prefix; the time panels' titles T[]
# (npanels of them, one per results table), nsweep and nformat (series in
# plot-sweep.dat, bars in plot-format.dat), the bar panels of the throttled
# volume, huge pages and the remote section (titles E[], nextra of them,
# data in plot-extra.dat), trows (rows of the time figure, 3 panels a row);
# the CDF panels' titles C[], their
# number of series S[], the series' colours L[] and dash types D[]
# (space-separated).
# Bar colours come with the data (third column, 0xRRGGBB), one per
# configuration in every panel: the Okabe-Ito palette (bench.py COLOURS;
# DASHES for the CDF lines).
load vars

set terminal pngcairo size 1400,(50 + 370 * trows) font "sans,9"
set output outdir."/".prefix."-time.png"
set multiplot layout trows,3 title "Time to finish, median of the runs: lower is better (seconds, log scale; p: = pagein)" font ",11"
set style fill solid 0.85 border rgb "#333333"
set boxwidth 0.6
set logscale y
set format y "%g"
set grid ytics
set xtics rotate by 30 right nomirror font ",8"
set offsets 0.5, 0.5, 0, 0
set ylabel "s (lower is better)"
unset key
do for [i=1:npanels] {
	set title T[i]
	plot datadir."/plot-time.dat" index (i-1) using 0:2:3:xtic(1) with boxes lc rgb variable, \
	     "" index (i-1) using 0:2:(sprintf("%.2f", $2)) with labels offset 0,0.7 font ",7"
}
if (nsweep > 0) {
	set title "Fault-around sweep, warm cache (pagein --populate none)"
	set xlabel "--fault-around N (pages)"
	set xtics rotate by 0 center
	set key top right font ",8"
	plot for [j=0:nsweep-1] datadir."/plot-sweep.dat" index j using 0:2:xtic(1) \
		with linespoints lw 2 pt 7 lc rgb word("#E69F00 #0072B2", j+1) title columnheader(1)
	unset xlabel
	unset key
	set xtics rotate by 30 right
}
if (nformat > 0) {
	set title "Snapshot format, cold, served by pagein: raw (orange) vs pagein file (blue)"
	plot datadir."/plot-format.dat" using 0:2:3:xtic(1) with boxes lc rgb variable, \
	     "" using 0:2:(sprintf("%.2f", $2)) with labels offset 0,0.7 font ",7"
}
# The throttled volume, huge pages (pgn: from the pagein-format file) and
# the remote section.
do for [i=1:nextra] {
	set title E[i]
	plot datadir."/plot-extra.dat" index (i-1) using 0:2:3:xtic(1) with boxes lc rgb variable, \
	     "" index (i-1) using 0:2:(sprintf("%.2f", $2)) with labels offset 0,0.7 font ",7"
}
unset multiplot

set output outdir."/".prefix."-latency-cdf.png"
crows = (ncdf + 2) / 3
set terminal pngcairo size 1400,(40 + 400 * crows) font "sans,9"
set multiplot layout crows,3 title "First-touch latency CDF, the median run of each configuration: further left (higher) is better" font ",11"
unset logscale y
set logscale x
set format x "10^{%L}"
set offsets 0, 0, 0, 0
set xtics rotate by 0 center nomirror
set xlabel "microseconds (lower is better)"
set ylabel "fraction of first touches"
set yrange [0:1]
set grid xtics ytics
set key bottom right font ",8"
do for [i=1:ncdf] {
	set title C[i]
	plot for [j=0:S[i]-1] sprintf("%s/plot-cdf-%d.dat", datadir, i) index j using 1:2 \
		with lines lw 2 dt int(word(D[i], j+1)) lc rgb word(L[i], j+1) title columnheader(1)
}
unset multiplot
