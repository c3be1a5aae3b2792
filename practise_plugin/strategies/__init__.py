"""Built-in strategies, one module each; :mod:`practise_plugin.registry` imports them on first use."""

BUILTIN = ("practise", "swd", "udfc")
