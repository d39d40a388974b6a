#!/bin/sh
# Installs the test S3 server's npm packages (package.json, versions pinned
# by package-lock.json) into DIR (default build/s3server) with `npm ci`, once:
# again only when the lock file changed. Needs node and npm (Node.js 18 or
# later). Prints DIR.
set -e
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../../../build/s3server}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if ! command -v npm >/dev/null 2>&1; then
	echo "s3server install: npm is not installed (Debian: apt-get install npm, or Node.js 18+)" >&2
	exit 1
fi
if [ ! -d "$dir/node_modules/s3rver" ] || ! cmp -s "$here/package-lock.json" "$dir/package-lock.json"; then
	cp "$here/package.json" "$here/package-lock.json" "$here/server.js" "$dir/"
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
cp "$here/server.js" "$dir/"
echo "$dir"
