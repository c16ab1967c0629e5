#!/usr/bin/env bash
# Install what vllmd needs on Debian 12 (as root), make the tokenizer files
# the tests use, and build into build/. Idempotent: re-running only rebuilds.
#   scripts/setup.sh [extra configure args]
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential autoconf automake libtool pkg-config
      libyaml-dev libmicrohttpd-dev libcjson-dev libcurl4-openssl-dev check libsubunit-dev
      libstb-dev libjpeg62-turbo-dev libwebp-dev libopenblas-dev libpcre2-dev libutf8proc-dev
      libssl-dev nodejs npm python3 python3-pil python3-numpy python3-jinja2 faketime)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian's packages (e.g. preinstalled): accept them
if command -v node >/dev/null && command -v npm >/dev/null; then
	missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash scripts/make-tokenizers.sh
# the Qwen2-VL fixtures use the npm-built Qwen tokenizer (kept out of git)
for d in tests/data/models/qwen2vl-tiny-*; do
	[ -s "$d/tokenizer.json" ] || cp tests/data/tok/qwen2/tokenizer.json "$d/"
done

# the official OpenAI client for the daemon's end-to-end tests
if [ ! -d tests/e2e/node_modules/openai ]; then
	(cd tests/e2e && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
	autoreconf -fi >/dev/null
fi
mkdir -p build
cd build
if [ ! -f Makefile ] || [ ../configure -nt Makefile ]; then
	../configure --quiet "$@"
fi
make -j"$(nproc)" >/dev/null
echo "setup: built $(pwd)/vllmd"
