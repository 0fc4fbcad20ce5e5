#!/usr/bin/env bash
# Copies the built files of the front-end libraries the dashboard embeds
# into ../static/vendor, from the versions package-lock.json pins. Run it
# after changing package.json; commit what it copies. Nothing at build or
# run time fetches them: they are in the binary.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts
out=../static/vendor
mkdir -p "$out"
cp node_modules/@xterm/xterm/lib/xterm.js "$out/xterm.js"
cp node_modules/@xterm/xterm/css/xterm.css "$out/xterm.css"
cp node_modules/@xterm/addon-fit/lib/addon-fit.js "$out/addon-fit.js"
cp node_modules/@xterm/xterm/LICENSE "$out/LICENSE.xterm"
# Their source maps are not shipped: drop the references to them.
sed -i '/^\/\/# sourceMappingURL=/d' "$out"/*.js
rm -rf node_modules
