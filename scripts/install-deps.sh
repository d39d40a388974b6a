#!/bin/sh
# Installs the Debian packages pagein needs to build and test, when missing:
# the toolchain and libraries, and what the tests start themselves (spin
# for the model; qemu, a kernel image and busybox for the real-guest test;
# prometheus for the metrics test; systemd for systemd-socket-activate in
# the lifecycle test; nginx-light, python3 and openssl (a test CA) for the remote-snapshot tests;
# libcurl and, when no npm is on the PATH, nodejs and npm for the s3://
# test's S3 server, tests/tools/s3server), and scdoc for the man pages. debhelper
# and dpkg-dev (the Debian package) are installed by
# tests/sh/debian_package.sh itself.
set -e
need=""
for p in gcc make pkg-config libjson-c-dev libzstd-dev libxxhash-dev libcmocka-dev libmicrohttpd-dev libssl-dev libcurl4-openssl-dev scdoc spin \
	nginx-light python3 openssl \
	qemu-system-x86 linux-image-cloud-amd64 busybox-static prometheus systemd; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
command -v npm >/dev/null 2>&1 || need="$need nodejs npm"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing Debian packages:$need (run as root, or apt-get install them)" >&2
	exit 1
fi
echo "install-deps: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $need >/dev/null
