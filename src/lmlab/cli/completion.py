"""Bash completion of ``lmlab <verb> ...``: the verb names, then each verb's own Hydra completion.

Hydra's script (``-sc install=bash``) asks the program named by the line's first word, so at
``lmlab pretrain mod<TAB>`` it ran ``lmlab -sc query=bash``, without the verb ("unknown verb '-sc'").
The script here asks ``lmlab <verb> -sc query=bash``, and `verb_line` shows that verb's Hydra app the
line as if the verb were the program. Not a verb: ``lmlab.cli`` imports it only for ``-sc``.
"""

from __future__ import annotations

import re

# `complete -o default`: where there is nothing to offer (a tool's options, a path), readline completes file names.
INSTALL = r"""_lmlab() {
    local line=${COMP_LINE:0:COMP_POINT}
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=($(compgen -W "%(names)s" -- "${COMP_WORDS[1]}"))
        return
    fi
    case ${COMP_WORDS[1]} in %(verbs)s) ;; *) return ;; esac
    # Hydra offers whole overrides (model=gru); readline replaces only what follows the last word break (= or :).
    local word=${line##*[[:space:]]} cur=${line##*[$COMP_WORDBREAKS]} choice choices
    read -ra choices <<< "$(COMP_LINE=$line "${COMP_WORDS[0]}" "${COMP_WORDS[1]}" -sc query=bash 2>/dev/null)"
    COMPREPLY=()
    for choice in "${choices[@]}"; do
        [[ $choice == "$word"* ]] && COMPREPLY+=("${choice:${#word}-${#cur}}")
    done
    [[ ${#COMPREPLY[@]} == 1 && ${COMPREPLY[0]} == *[=./] ]] && compopt -o nospace
}
complete -o default -F _lmlab lmlab"""
UNINSTALL = "complete -r lmlab 2>/dev/null; unset -f _lmlab"


def script(args: list[str], names: list[str], verbs: list[str]) -> str | None:
    """What ``-sc install=bash`` (or ``uninstall=bash``) among a verb's arguments prints: ``names`` complete
    the first word, and ``verbs`` (Hydra apps) their overrides. None for ``-sc query=...``, which the verb's
    Hydra app answers. Other shells exit with a message: the script is bash's."""
    for arg in args:
        command, _, shell = arg.partition("=")
        if command in ("install", "uninstall"):
            if shell != "bash":
                raise SystemExit(f"lmlab: shell completion is for bash only, not {shell!r}: -sc {command}=bash")
            return INSTALL % {"names": " ".join(names), "verbs": "|".join(verbs)} if command == "install" else UNINSTALL
    return None


def verb_line(line: str) -> str:
    """COMP_LINE as the verb's Hydra app reads it (the first word is the program): ``lmlab pretrain model=`` ->
    ``lmlab model=``."""
    return re.sub(r"^\s*\S+\s+\S+", "lmlab", line, count=1)
