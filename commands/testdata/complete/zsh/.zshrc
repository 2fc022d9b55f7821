# The interactive zsh that zsh-complete.zsh types into: the completion
# system with the _vbackup of $VBACKUP_ZSH_FPATH, and a compadd that also
# prints every candidate it adds, as the word it would make.
PS1='' RPS1='' PS2=''
unset zle_bracketed_paste
fpath=("$VBACKUP_ZSH_FPATH" $fpath)
autoload -Uz compinit && compinit -u -D
zstyle ':completion:*' insert-tab false
comppostfuncs=(__vbtest_done)
__vbtest_done() {
  print -r -- '@@done'
  exit
}
compadd() {
  # Calls that only ask (-O, -A, -D) add nothing: the completion system's own.
  local -a ask
  zparseopts -E -a ask O: A: D:
  if (( $#ask )); then
    builtin compadd "$@"
    return
  fi
  local -a matches pre hpre
  local m
  zparseopts -E P:=pre p:=hpre
  builtin compadd -A matches "$@"
  for m in $matches; do
    print -r -- "@@cand $IPREFIX${pre[2]}${hpre[2]}$m"
  done
  builtin compadd "$@"
}
