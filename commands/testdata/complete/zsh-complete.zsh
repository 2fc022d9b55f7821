#!/usr/bin/env zsh
# zsh-complete.zsh LINE: the candidates zsh's completion system offers at the
# end of LINE, one per line, as the words they would make. It types LINE and
# a TAB into an interactive zsh on a pseudo-terminal (zsh/zpty), set up by
# zsh/.zshrc beside this file; $VBACKUP_ZSH_FPATH names the folder of the
# _vbackup under test.
emulate -L zsh
zmodload zsh/zpty || exit 2
zpty vbtest "ZDOTDIR=${(q)${0:A:h}}/zsh zsh -i"
zpty -w -n vbtest "$1"$'\t'
local out line
zpty -r vbtest out '*@@done*' || exit 3
zpty -d vbtest
for line in "${(@f)out}"; do
  line=${line%$'\r'}
  # The first may follow the echo of LINE on its line.
  [[ $line == *'@@cand '* ]] && print -r -- "${line#*'@@cand '}"
done
exit 0
