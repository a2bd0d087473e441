#!/bin/sh
# What the browser, Node.js and remote-target tests need besides Python: Debian's Chromium and
# openssh-server (apt; the remote tests start their own sshd on 127.0.0.1, nothing system-wide) and the npm
# packages pinned in tests/browser (onnxruntime-web, playwright-core: it drives the system
# Chromium and downloads no browser) and examples/node (onnxruntime-node, pngjs, jpeg-js).
# npm runs with --ignore-scripts: onnxruntime-node's install script reaches for a host outside
# the registries, and none of these packages needs its script. Whatever cannot be installed here
# is said in one line; the tests that need it then skip, naming it.
cd "$(dirname "$0")/.." || exit 1
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "system-deps: apt-get could not install chromium; the browser tests will skip"
  else
    echo "system-deps: no chromium and no root apt-get to install it (apt-get install chromium); the browser tests will skip"
  fi
fi
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null) \
      || echo "system-deps: apt-get could not install openssh-server; the ssh target tests will skip"
  else
    echo "system-deps: no sshd and no root apt-get to install it (apt-get install openssh-server); the ssh target tests will skip"
  fi
fi
if command -v npm >/dev/null 2>&1; then
  for dir in tests/browser examples/node; do
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) \
      || echo "system-deps: npm ci failed in $dir; the tests that need it will skip or fail naming it"
  done
else
  echo "system-deps: npm is not installed (apt-get install nodejs npm); the browser and Node.js tests will skip"
fi
exit 0
