"""Reading a function's parameters, also for torch's C builtins (whose docstring states them)."""

import ast
import inspect


def signature_params(fn) -> list:
    """[(name, default), ...] of ``fn``; for a builtin, parsed from the signature its docstring opens with."""
    try:
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]
    except ValueError:
        doc = fn.__doc__.strip()
        head = doc[: doc.index(")") + 1]  # "name(a, b=1,\n  c=None)" may span lines
        tree = ast.parse(f"def {head.strip()}: pass")
        args = tree.body[0].args
        positional = args.posonlyargs + args.args
        defaults = [inspect.Parameter.empty] * (len(positional) - len(args.defaults))
        defaults += [ast.literal_eval(d) for d in args.defaults]
        params = [(a.arg, d) for a, d in zip(positional, defaults)]
        params += [(a.arg, inspect.Parameter.empty if d is None else ast.literal_eval(d))
                   for a, d in zip(args.kwonlyargs, args.kw_defaults) if a.arg != "out"]
        return params
