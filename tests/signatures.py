"""Reading a function's parameters, also for torch's C builtins (whose docstring states them)."""

import inspect


def signature_params(fn) -> list:
    try:
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]
    except ValueError:  # a C builtin: its docstring opens with the signature
        line = fn.__doc__.strip().splitlines()[0]
        inner = line[line.index("(") + 1: line.rindex(")")]
        parsed = []
        for part in (p.strip() for p in inner.split(",")):
            if part in ("*", "") or part.startswith("out="):
                continue
            name, _, default = part.partition("=")
            parsed.append((name.strip(), eval(default) if default else inspect.Parameter.empty))
        return parsed
