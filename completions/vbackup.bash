# bash completion for vbackup                              -*- shell-script -*-
#
# Written by 'vbackup completion bash'. make install puts it in
# $(PREFIX)/share/bash-completion/completions/vbackup, where bash-completion
# finds it; or load it from ~/.bashrc: source <(vbackup completion bash)
#
# The binary finds the candidates: 'vbackup __complete bash -- WORD...' prints
# what the word under the cursor is ("words", or "files"/"dirs" and the part
# before the path), then one candidate per line. It asks libvirt for domains,
# checkpoints and disks, gives up after a second, and never prompts.

_vbackup() {
    local cur words cword
    if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
        # bash-completion: keep --flag=value and unix:/path in one word
        _get_comp_words_by_ref -n =: cur words cword
    else
        local line=${COMP_LINE:0:COMP_POINT}
        read -r -a words <<<"$line"
        [[ -z $line || $line == *[[:blank:]] ]] && words+=("")
        cword=$((${#words[@]} - 1))
        cur=${words[cword]}
    fi
    COMPREPLY=()
    ((cword > 0)) || return 0

    local prog=${words[0]} out
    [[ $prog == "~/"* ]] && prog=$HOME/${prog#"~/"}
    out=$("$prog" __complete bash -- "${words[@]:1:cword-1}" "$cur" 2>/dev/null </dev/null)
    local -a lines
    mapfile -t lines <<<"$out"
    local head=${lines[0]} prefix=
    [[ $head == *$'\t'* ]] && prefix=${head#*$'\t'}

    case ${head%%$'\t'*} in
    files | dirs)
        if [[ -z $prefix ]] && declare -F _filedir >/dev/null 2>&1; then
            if [[ $head == dirs* ]]; then _filedir -d; else _filedir; fi
            return 0
        fi
        local path
        local -a paths
        if [[ $head == dirs* ]]; then
            mapfile -t paths < <(compgen -d -- "${cur#"$prefix"}")
        else
            mapfile -t paths < <(compgen -f -- "${cur#"$prefix"}")
        fi
        for path in "${paths[@]}"; do
            [[ -d $path ]] && path+=/
            COMPREPLY+=("$prefix$path")
        done
        ;;
    words)
        local line
        for line in "${lines[@]:1}"; do
            [[ -n $line ]] && COMPREPLY+=("${line%%$'\t'*}")
        done
        ;;
    esac

    # A lone candidate that is not finished (vda,target=) takes no space.
    if ((${#COMPREPLY[@]} == 1)) && [[ ${COMPREPLY[0]} == *[=,:/] ]]; then
        compopt -o nospace 2>/dev/null
    fi
    # Readline replaces only what follows the last '=' or ':' of the word
    # (both are in COMP_WORDBREAKS); quote what the shell would split.
    local breaks=${COMP_WORDBREAKS//[^=:]/} strip= i c
    [[ -n $breaks && $cur == *[$breaks]* ]] && strip=${cur%"${cur##*[$breaks]}"}
    for i in "${!COMPREPLY[@]}"; do
        c=${COMPREPLY[i]#"$strip"}
        if [[ $cur != [\'\"]* && $c == *[[:space:]\'\"\\\$\`\&\|\;\<\>\(\)\*\?\[\]\!\#]* ]]; then
            printf -v c %q "$c"
        fi
        COMPREPLY[i]=$c
    done
    return 0
}

complete -F _vbackup vbackup
