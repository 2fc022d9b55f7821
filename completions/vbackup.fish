# fish completion for vbackup. Written by 'vbackup completion fish'. make
# install puts it in $(PREFIX)/share/fish/vendor_completions.d/vbackup.fish;
# or copy it to ~/.config/fish/completions/vbackup.fish.
#
# The binary finds the candidates: 'vbackup __complete fish -- WORD...' prints
# what the word under the cursor is ("words", or "files"/"dirs" and the part
# before the path), then one candidate per line, "VALUE<TAB>DESCRIPTION". It
# asks libvirt for domains, checkpoints and disks, gives up after a second,
# and never prompts.

function __vbackup_complete
    set -l words (commandline -opc)
    set -l cur (commandline -ct | string unescape)
    set -l out ($words[1] __complete fish -- $words[2..-1] "$cur" 2>/dev/null </dev/null)
    set -l head (string split -m 1 \t -- $out[1])
    switch "$head[1]"
        case files dirs
            set -l prefix "$head[2]"
            set -l rest (string sub -s (math (string length -- "$prefix") + 1) -- "$cur")
            set -l paths
            if test "$head[1]" = dirs
                set paths (__fish_complete_directories "$rest")
            else
                set paths (__fish_complete_path "$rest")
            end
            for path in $paths
                printf '%s%s\n' "$prefix" "$path"
            end
        case words
            printf '%s\n' $out[2..-1]
    end
end

complete -c vbackup -f -a '(__vbackup_complete)'
