/**
 * `mvnet completion bash|zsh`: a completion script generated from the commander tree (so it
 * cannot drift from the CLI): subcommands, options, and for options that take a network or VM
 * name, and `<vm>`/`<net>` arguments, the names the daemon has now (`mvnet --json vm list`, quietly:
 * nothing is offered when the daemon is not reachable).
 */
import { Argument, Command } from 'commander';

/** One command of the tree, as completion and the man page see it. */
export interface CommandNode {
  /** `mvnet vm attach`. */
  path: string;
  cmd: Command;
  subs: string[];
  /** Long and short flags (`--net`, `-v`). */
  opts: string[];
  /** The flags among `opts` that take a value (the next word is theirs). */
  valueOpts: string[];
  /** Positional argument names (`vm`, `net`, `file`). */
  args: string[];
}

/** Every command below (and including) `root`, depth first, `help` left out (commander's own). */
export function commandTree(root: Command, prefix = root.name()): CommandNode[] {
  const opts = root.options.flatMap((o) => [o.long, o.short].filter((f): f is string => f !== undefined));
  const valueOpts = root.options.filter((o) => o.required || o.optional).flatMap((o) => [o.long, o.short].filter((f): f is string => f !== undefined));
  const subs = root.commands.filter((c) => c.name() !== 'help');
  const node: CommandNode = {
    path: prefix,
    cmd: root,
    subs: subs.map((c) => c.name()),
    opts: [...opts, '--help'],
    valueOpts,
    args: root.registeredArguments.map((a) => a.name()),
  };
  return [node, ...subs.flatMap((c) => commandTree(c, `${prefix} ${c.name()}`))];
}

/** Which option values and arguments name a VM or a network (completed from the daemon). */
const VM_WORDS = ['vm', 'vms', '--vm', '--via'];
const NET_WORDS = ['net', 'network', '--net'];

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

function tables(nodes: CommandNode[], decl: string): string {
  const lines: string[] = [];
  const assoc = (name: string, f: (n: CommandNode) => string): void => {
    lines.push(`${decl} ${name}`);
    lines.push(`${name}=(`);
    // bash: [key]=value; zsh: key value pairs (its [key]=value form is newer and quoted keys trip it).
    for (const n of nodes) lines.push(decl.startsWith('typeset') ? `  ${quote(n.path)} ${quote(f(n))}` : `  [${quote(n.path)}]=${quote(f(n))}`);
    lines.push(')');
  };
  assoc('_mvnet_subs', (n) => n.subs.join(' '));
  assoc('_mvnet_opts', (n) => n.opts.join(' '));
  // Per positional argument: vm, net, c:A,B (its choices) or - (anything: files).
  assoc('_mvnet_args', (n) =>
    n.cmd.registeredArguments
      .map((a) => (a.argChoices !== undefined ? `c:${a.argChoices.join(',')}` : VM_WORDS.includes(a.name()) ? 'vm' : NET_WORDS.includes(a.name()) ? 'net' : '-'))
      .join(' '),
  );
  const valueOpts = [...new Set(nodes.flatMap((n) => n.valueOpts))];
  lines.push(`_mvnet_valopts=${quote(` ${valueOpts.join(' ')} `)}`);
  lines.push(`_mvnet_vmopts=${quote(` ${VM_WORDS.filter((w) => w.startsWith('-')).join(' ')} `)}`);
  lines.push(`_mvnet_netopts=${quote(` ${NET_WORDS.filter((w) => w.startsWith('-')).join(' ')} `)}`);
  return lines.join('\n');
}

/**
 * The shell-neutral part: walks the words before the cursor to the deepest command, and sets
 * `_mvnet_path`, `_mvnet_argn` (how many positional words it has) and `_mvnet_sock` (a --socket
 * given on the line). Written in the subset bash and zsh share; `$1` is the index of the first
 * word after `mvnet`, `$2` that of the cursor's, `$3..` the words.
 */
const WALK = `_mvnet_walk() {
  local first=$1 cur=$2 i w skip=0 cand
  shift 2
  _mvnet_path=mvnet _mvnet_argn=0 _mvnet_sock=
  local -a ws
  ws=("$@")
  for ((i = first; i < cur; i++)); do
    w=\${ws[i]}
    if ((skip)); then
      skip=0
      continue
    fi
    case $w in
      --socket=*) _mvnet_sock=\${w#--socket=} ;;
      --socket) _mvnet_sock=\${ws[i+1]}; skip=1 ;;
      --*=*) ;;
      -*) [[ $_mvnet_valopts == *" $w "* ]] && skip=1 ;;
      *)
        cand="$_mvnet_path $w"
        if [[ " \${_mvnet_subs[$_mvnet_path]} " == *" $w "* ]]; then
          _mvnet_path=$cand
          _mvnet_argn=0
        else
          ((_mvnet_argn++))
        fi
        ;;
    esac
  done
}

# Names the daemon knows now: vm or net; nothing (and no error) when it does not answer.
_mvnet_names() {
  local -a s
  [[ -n $_mvnet_sock ]] && s=(--socket "$_mvnet_sock")
  command mvnet "\${s[@]}" --json "$1" list 2>/dev/null | command node -e '
    let t = ""; process.stdin.on("data", (d) => (t += d)).on("end", () => {
      try { for (const x of JSON.parse(t)) if (x && typeof x.name === "string") console.log(x.name); } catch {}
    });' 2>/dev/null
}

# What to offer for the word at the cursor: prints one candidate per line.
_mvnet_candidates() {
  local prev=$1 cur=$2 kind
  if [[ $_mvnet_vmopts == *" $prev "* ]]; then _mvnet_names vm; return; fi
  if [[ $_mvnet_netopts == *" $prev "* ]]; then _mvnet_names net; return; fi
  if [[ $prev == -* && $_mvnet_valopts == *" $prev "* ]]; then return 1; fi
  if [[ $cur == -* ]]; then
    printf '%s\\n' \${=_mvnet_opts[$_mvnet_path]}
    return
  fi
  if [[ -n \${_mvnet_subs[$_mvnet_path]} ]]; then
    printf '%s\\n' \${=_mvnet_subs[$_mvnet_path]}
    return
  fi
  local -a kinds
  kinds=(\${=_mvnet_args[$_mvnet_path]})
  kind=\${kinds[_mvnet_argn + _mvnet_base]}
  case $kind in
    vm) _mvnet_names vm ;;
    net) _mvnet_names net ;;
    c:*) printf '%s\\n' \${kind#c:} | tr , '\\n' ;;
    *) return 1 ;;
  esac
}`;

export function bashScript(root: Command): string {
  const nodes = commandTree(root);
  // bash has no ${=x} (zsh's word split); the same text, with it removed, splits by default.
  const walk = WALK.replaceAll('${=', '${');
  return `# bash completion for mvnet, generated by \`mvnet completion bash\` from the CLI definition.
# Use: source <(mvnet completion bash)   or save it as /usr/share/bash-completion/completions/mvnet
${tables(nodes, 'declare -gA')}
_mvnet_base=0
${walk}

_mvnet() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} out
  _mvnet_walk 1 "$COMP_CWORD" "\${COMP_WORDS[@]}"
  if out=$(_mvnet_candidates "$prev" "$cur"); then
    local IFS=$'\\n'
    COMPREPLY=($(compgen -W "$out" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _mvnet mvnet
`;
}

export function zshScript(root: Command): string {
  const nodes = commandTree(root);
  return `#compdef mvnet
# zsh completion for mvnet, generated by \`mvnet completion zsh\` from the CLI definition.
# Use: source <(mvnet completion zsh)   or save it as _mvnet in a directory of $fpath
${tables(nodes, 'typeset -gA')}
# zsh arrays count from 1: the first positional kind is kinds[1].
_mvnet_base=1
${WALK}

_mvnet() {
  local out
  # words[1] is "mvnet"; as the shared walk indexes from 1 as well, it starts at 2.
  _mvnet_walk 2 "$CURRENT" "\${words[@]}"
  if out=$(_mvnet_candidates "\${words[CURRENT-1]}" "\${words[CURRENT]}"); then
    compadd -- \${(f)out}
  else
    _files
  fi
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _mvnet "$@"
else
  compdef _mvnet mvnet
fi
`;
}

export function completionCommand(program: Command): Command {
  return new Command('completion')
    .description('print a shell completion script (bash or zsh): source <(mvnet completion bash)')
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
    .action((shell: 'bash' | 'zsh') => {
      process.stdout.write(shell === 'bash' ? bashScript(program) : zshScript(program));
    });
}
