package commands

import (
	"context"
	"io"
	"strings"

	"github.com/urfave/cli/v3"
)

// completionScripts makes 'vbackup completion SHELL' print vbackup's own
// scripts instead of the CLI library's, which send the binary only the
// words before the cursor's and so cannot complete a flag's value, a disk
// spec or a path. Each script hands the words to 'vbackup __complete' (see
// completeCommandName) and turns its answer into the shell's candidates.
// The bash, zsh and fish scripts are committed under completions/ too;
// TestCompletionScriptsCommitted keeps them equal to these.
func completionScripts(env *Env) func(*cli.Command) {
	return func(c *cli.Command) {
		c.Hidden = false
		c.Category = categoryShell
		c.Usage = "print the shell completion script for bash, zsh, fish or pwsh"
		c.ArgsUsage = "bash|zsh|fish|pwsh"
		c.UsageText = "vbackup completion " + c.ArgsUsage
		c.OnUsageError = onUsageError
		c.Action = func(_ context.Context, cmd *cli.Command) error {
			if cmd.NArg() == 0 {
				return usageErrorf(cmd, "missing SHELL argument: bash, zsh, fish or pwsh")
			}
			return usageErrorf(cmd, "unknown shell %q: bash, zsh, fish or pwsh", cmd.Args().First())
		}
		c.Description = "Prints the script that makes SHELL complete vbackup's commands, options,\n" +
			"domains, checkpoints, disks, disk specs and the backups in a folder. make\n" +
			"install installs the bash, zsh and fish scripts; to load one by hand:\n\n" +
			"   bash:  source <(vbackup completion bash)              (in ~/.bashrc)\n" +
			"   zsh:   source <(vbackup completion zsh)               (in ~/.zshrc, after compinit)\n" +
			"   fish:  vbackup completion fish > ~/.config/fish/completions/vbackup.fish\n" +
			"   pwsh:  vbackup completion pwsh | Out-String | Invoke-Expression   (in $PROFILE)"
		for _, sub := range c.Commands {
			script, ok := shellScripts[sub.Name]
			if !ok {
				continue
			}
			sub.Usage = "print the " + sub.Name + " completion script"
			sub.Action = func(context.Context, *cli.Command) error {
				_, err := io.WriteString(env.Stdout, script)
				return err
			}
		}
	}
}

// shellScripts are the completion scripts by shell; committedScripts names
// the files under completions/ that hold the same text.
var shellScripts = map[string]string{
	"bash": bashScript,
	"zsh":  zshScript,
	"fish": fishScript,
	"pwsh": pwshScript,
}

var committedScripts = map[string]string{
	"bash": "vbackup.bash",
	"zsh":  "_vbackup",
	"fish": "vbackup.fish",
}

// shellUnquote removes the quoting of a word as bash would, leniently: an
// unfinished quote runs to the end of the word (the word being typed).
func shellUnquote(w string) string {
	if !strings.ContainsAny(w, `'"\`) {
		return w
	}
	var b strings.Builder
	var quote byte
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				b.WriteByte(c)
			}
		case quote == '"':
			switch {
			case c == '"':
				quote = 0
			case c == '\\' && i+1 < len(w) && strings.IndexByte("\\\"$`", w[i+1]) >= 0:
				i++
				b.WriteByte(w[i])
			default:
				b.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '\\' && i+1 < len(w):
			i++
			b.WriteByte(w[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

const bashScript = `# bash completion for vbackup                              -*- shell-script -*-
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
        if [[ $cur != [\'\"]* && $c == *[[:space:]\'\"\\\$\` + "`" + `\&\|\;\<\>\(\)\*\?\[\]\!\#]* ]]; then
            printf -v c %q "$c"
        fi
        COMPREPLY[i]=$c
    done
    return 0
}

complete -F _vbackup vbackup
`

const zshScript = `#compdef vbackup
#
# zsh completion for vbackup. Written by 'vbackup completion zsh'. make
# install puts it in $(PREFIX)/share/zsh/vendor-completions/_vbackup, in
# zsh's $fpath on Debian for PREFIX=/usr (for /usr/local, add that folder to
# fpath before compinit); or load it from ~/.zshrc, after compinit:
# source <(vbackup completion zsh)
#
# The binary finds the candidates: 'vbackup __complete zsh -- WORD...' prints
# what the word under the cursor is ("words", or "files"/"dirs" and the part
# before the path), then one candidate per line, "VALUE<TAB>DESCRIPTION". It
# asks libvirt for domains, checkpoints and disks, gives up after a second,
# and never prompts.

_vbackup() {
  local prog out head kind prefix line value desc ret=1
  local -a lines finished unfinished
  prog=${(Q)words[1]}
  [[ $prog == '~/'* ]] && prog=$HOME/${prog#'~/'}
  out=$("$prog" __complete zsh -- "${(@Q)words[2,CURRENT-1]}" "${(Q)PREFIX}" 2>/dev/null </dev/null)
  lines=("${(@f)out}")
  head=${lines[1]}
  kind=${head%%$'\t'*}
  [[ $head == *$'\t'* ]] && prefix=${head#*$'\t'}
  case $kind in
    files|dirs)
      [[ -n $prefix ]] && compset -P "${(b)prefix}"
      if [[ $kind == dirs ]]; then _files -/; else _files; fi
      return
      ;;
    words) ;;
    *) return 1 ;;
  esac
  for line in "${(@)lines[2,-1]}"; do
    [[ -n $line ]] || continue
    value=${line%%$'\t'*}
    desc=
    [[ $line == *$'\t'* ]] && desc=${line#*$'\t'}
    # An unfinished value (vda,target=) takes no space after it.
    if [[ $value == *[=,:/] ]]; then
      unfinished+=("${value//:/\\:}${desc:+:$desc}")
    else
      finished+=("${value//:/\\:}${desc:+:$desc}")
    fi
  done
  (( $#finished )) && _describe -t vbackup-values 'value' finished && ret=0
  (( $#unfinished )) && _describe -t vbackup-values 'value' unfinished -S '' && ret=0
  return ret
}

if [[ $funcstack[1] == _vbackup ]]; then
  _vbackup "$@"
else
  compdef _vbackup vbackup
fi
`

const fishScript = `# fish completion for vbackup. Written by 'vbackup completion fish'. make
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
`

const pwshScript = `# PowerShell completion for vbackup. Written by 'vbackup completion pwsh'; load
# it from $PROFILE: vbackup completion pwsh | Out-String | Invoke-Expression
#
# The binary finds the candidates: 'vbackup __complete pwsh -- WORD...' prints
# what the word under the cursor is ("words", or "files"/"dirs" and the part
# before the path), then one candidate per line, "VALUE<TAB>DESCRIPTION". It
# asks libvirt for domains, checkpoints and disks, gives up after a second,
# and never prompts.

Register-ArgumentCompleter -Native -CommandName vbackup -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)
    $tab = [char]9
    $elements = @($commandAst.CommandElements | Where-Object { $_.Extent.StartOffset -lt $cursorPosition })
    $words = @($elements | Select-Object -Skip 1 | ForEach-Object { $_.Extent.Text })
    if ($wordToComplete -eq '') { $words += '' } else { $words[-1] = $wordToComplete }
    $out = @(& $elements[0].Extent.Text __complete pwsh -- @words 2>$null)
    if ($out.Count -eq 0) { return }
    $head = $out[0].Split($tab, 2)
    $quote = {
        param($s)
        if ($s -match '[\s''"$@#;,(){}|&<>]') { "'" + $s.Replace("'", "''") + "'" } else { $s }
    }
    if ($head[0] -eq 'files' -or $head[0] -eq 'dirs') {
        $prefix = if ($head.Count -gt 1) { $head[1] } else { '' }
        if ($prefix -eq '') { return $null } # PowerShell completes the path itself
        $rest = $wordToComplete.Substring([Math]::Min($prefix.Length, $wordToComplete.Length))
        $base = $rest.Substring(0, $rest.LastIndexOf('/') + 1)
        Get-ChildItem -Path "$rest*" -Directory:($head[0] -eq 'dirs') -ErrorAction Ignore | ForEach-Object {
            $value = $prefix + $base + $_.Name
            if ($_.PSIsContainer) { $value += '/' }
            [System.Management.Automation.CompletionResult]::new((& $quote $value), $value, 'ProviderItem', $value)
        }
        return
    }
    if ($head[0] -ne 'words') { return }
    $out | Select-Object -Skip 1 | Where-Object { $_ -ne '' } | ForEach-Object {
        $pair = $_.Split($tab, 2)
        $desc = if ($pair.Count -gt 1) { $pair[1] } else { $pair[0] }
        [System.Management.Automation.CompletionResult]::new((& $quote $pair[0]), $pair[0], 'ParameterValue', $desc)
    }
}
`
