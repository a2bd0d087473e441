"""The one rule of the library's entry points that take an options object (`export`, `parity`,
`bench`, their `--on` twins, `time_files`): the object, or instead its fields as keywords."""

from __future__ import annotations


def options_or_keywords(make, options, keywords: dict, caller: str, name: str = "options"):
    """`options` when given (then `keywords` must be empty), else `make(**keywords)`.

    Args:
        make: the options class, or a function making one from the keywords.
        caller: the function's name, for the message.
    Raises:
        TypeError: both, or (from `make`) an unknown keyword.
    """
    if options is None:
        return make(**keywords)
    if keywords:
        raise TypeError(f"{caller}() takes {name}= or the keywords ({', '.join(keywords)}), not both")
    return options
