#!/bin/sh
# The vllmd(1) man page, generated from `vllmd --help` so the two never
# disagree: the help text verbatim in a no-fill block. No date goes in, so
# the page is the same whenever and wherever it is built.
#   scripts/help2man.sh ./vllmd VERSION > vllmd.1
set -e
bin=$1
version=$2
cat <<ROFF
.TH VLLMD 1 "" "vllmd $version" "User Commands"
.SH NAME
vllmd \- serve vision-language models behind an OpenAI-compatible API, and run offline batch inference
.SH SYNOPSIS
.B vllmd
.B \-\-config
.I FILE.yaml
.RI [ options ]
.br
.B vllmd serve
.I MODEL_DIR
.RI [ options ]
.br
.B vllmd generate
.B \-\-model
.I DIR
.RI [ options ]
.SH DESCRIPTION
.nf
ROFF
# roff escapes: backslashes, and lines starting with . or '
"$bin" --help | sed -e 's/\\/\\e/g' -e "s/^\\./\\\\\\&./" -e "s/^'/\\\\\\&'/"
cat <<ROFF
.fi
.SH FILES
Configurations and chat templates installed with vllmd live in its data
directory (pkg-config \-\-variable=confdir vllmd); a \-\-config name that is
not a file is looked up there. Model-family plugins live in its plugin
directory (pkg-config \-\-variable=pluginsdir vllmd).
ROFF
