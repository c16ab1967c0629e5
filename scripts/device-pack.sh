#!/usr/bin/env bash
# Pack a CPU-machine build for a GPU machine that lacks vllmd's Debian
# libraries: the binaries, plugins and every shared library they need that is
# not glibc, libstdc++ or CUDA's, into one compressed file (default
# .devpack.tar.xz, ignored by git) that bench/gpu_run.sh unpacks there.
#   scripts/device-pack.sh [build dir] [out file]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
OUTF=${2:-.devpack.tar.xz}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin" "$T/plugins" "$T/lib" "$T/tok"
bins=("$B/vllmd")
for t in test_llava test_phi3v test_qwen2vl test_engine test_ops_cuda test_kv_fp8; do
	[ -x "$B/tests/$t" ] && bins+=("$B/tests/$t")
done
for t in "$B"/bench/*; do
	[ -x "$t" ] && [ -f "$t" ] && [[ "$t" != *.o ]] && bins+=("$t")
done
cp "${bins[@]}" "$T/bin/"
strip --strip-debug "$T"/bin/*
cp -L "$B"/build-plugins/*.so "$T/plugins/"
skip='^(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux.*|libcublas|libcublasLt|libcudart|libcudnn.*)\.so'
for f in "$T"/bin/* "$T"/plugins/*; do
	ldd "$f" | awk '/=> \//{print $1" "$3}'
done | sort -u | while read -r name path; do
	[[ "$name" =~ $skip ]] && continue
	cp -L "$path" "$T/lib/$name"
done
# the Qwen2 tokenizer is generated at setup (npm), not in git
[ -s tests/data/tok/qwen2/tokenizer.json ] && cp tests/data/tok/qwen2/tokenizer*.json "$T/tok/"
XZ_OPT=-9 tar -C "$T" -cJf "$OUTF" .
echo "device-pack: $OUTF $(du -h "$OUTF" | cut -f1) ($(ls "$T/bin" | wc -l) programs, $(ls "$T/lib" | wc -l) libraries)"
