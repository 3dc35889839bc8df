"""What an error costs to show: IPython's tracebacks, made cheap without changing a character of them.

IPython formats a traceback with stack_data, which rebuilds pygments objects every time:
- for every frame, a new subclass of pygments' PythonLexer (to mark the executing node); pygments
  builds a lexer class's token tables (~250 regexes, its keyword lists optimised into regexes again)
  on the class's first instance, so each frame of each traceback paid ~4 ms. A subclass that changes
  nothing the tables are built from now gets its parent's tables, which would come out identical.
- for every traceback, a new pygments style class with the executing-node variants: now one per
  (style, modifier).
`warm_up` formats one traceback while a fresh kernel is idle, so its first error does not pay for
importing stack_data and building the lexer's tables.
"""

from __future__ import annotations

import sys

from ipymini import patches

# what pygments builds a RegexLexer's token tables from (pygments.lexer.RegexLexerMeta)
_TABLE_INPUTS = frozenset({"tokens", "flags", "token_variants", "get_tokendefs", "process_tokendef",
                           "_process_state", "_process_regex", "_process_token", "_process_new_state"})


_installed = False


def install_caches() -> None:
    """Share PythonLexer's token tables with subclasses that change none of their inputs, and build
    stack_data's executing-node style once per style (patches.py lists both). Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    import stack_data
    from pygments.lexers.python import PythonLexer

    def share_token_tables(cls, **kwargs):
        super(PythonLexer, cls).__init_subclass__(**kwargs)
        if len(cls.__bases__) == 1 and _TABLE_INPUTS.isdisjoint(cls.__dict__):
            parent = cls.__bases__[0]
            if "_tokens" in parent.__dict__:  # built already (by the parent's first instance)
                cls._tokens = parent._tokens

    patches.patch(PythonLexer, "__init_subclass__", classmethod(share_token_tables))

    build_style = stack_data.style_with_executing_node
    styles: dict = {}

    def style_with_executing_node(style, modifier):
        try:
            return styles[style, modifier]
        except KeyError:
            made = styles[style, modifier] = build_style(style, modifier)
            return made
        except TypeError:  # an unhashable style argument: build it every time, as stack_data does
            return build_style(style, modifier)

    style_with_executing_node.__doc__ = build_style.__doc__
    patches.patch(stack_data, "style_with_executing_node", style_with_executing_node)


def warm_up(shell) -> None:
    """Format one traceback of a cell-like frame while the kernel is idle after start-up: a fresh
    kernel's first error or interrupt would otherwise pay for importing stack_data and building
    pygments' lexer and formatter (~25 ms). A formatter of its own: the shell's keeps no trace of it."""
    import linecache

    from IPython.core import ultratb

    from ipymini.debugging.cellfile import tmp_prefix

    name = f"{tmp_prefix()}warm-up.py"
    source = "def warm_up():\n    raise ValueError('warm-up')\nwarm_up()\n"
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    try:
        install_caches()
        formatter = ultratb.AutoFormattedTB(mode=shell.xmode, theme_name=shell.colors, tb_offset=1)
        try:
            exec(compile(source, name, "exec"), {})
        except ValueError:
            formatter.structured_traceback(*sys.exc_info())
    except Exception:  # only a warm-up: the real traceback will do the work if this could not
        pass
    finally:
        linecache.cache.pop(name, None)
