"""The grammar of the symbolic sizes in a `torch.export` program (`expr_str`): what torch
writes and nothing else. torch hands these strings to `sympy.sympify`, an `eval`; here they are
tokenised and parsed by a small recursive-descent parser over a closed set of names. Nothing is
evaluated."""

from __future__ import annotations

import re

# == torch.export programs: symbolic sizes ======================================================
_SYMBOL_NAME = re.compile(r"[a-z]{1,8}(?:[0-9]{1,6}_)?[0-9]{1,6}")
_DECIMAL = re.compile(r"-?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:e[+-]?[0-9]{1,3})?")
_ASSUMPTIONS = frozenset({"integer", "positive", "negative", "nonnegative", "nonpositive", "zero", "nonzero", "real",
                          "extended_real", "finite", "rational", "even", "odd", "commutative"})
# The functions torch's deserializer resolves (its `sympy_functions`) and the sympy classes
# `srepr` prints for the sizes, relations and booleans torch serializes: name -> (min, max) args.
_FUNCTIONS = {
    "Add": (2, None), "Mul": (2, None), "Pow": (2, 2), "Max": (2, None), "Min": (2, None), "Abs": (1, 1),
    "FloorDiv": (2, 2), "ModularIndexing": (3, 3), "Where": (3, 3), "PythonMod": (2, 2), "Mod": (2, 2),
    "CleanDiv": (2, 2), "CeilToInt": (1, 1), "FloorToInt": (1, 1), "CeilDiv": (2, 2), "LShift": (2, 2),
    "RShift": (2, 2), "PowByNatural": (2, 2), "FloatPow": (2, 2), "FloatTrueDiv": (2, 2), "IntTrueDiv": (2, 2),
    "IsNonOverlappingAndDenseIndicator": (1, None), "TruncToFloat": (1, 1), "TruncToInt": (1, 1),
    "RoundToInt": (1, 1), "RoundDecimal": (2, 2), "ToFloat": (1, 1), "Identity": (1, 1),
    "Equality": (2, 2), "Unequality": (2, 2), "StrictLessThan": (2, 2), "LessThan": (2, 2),
    "StrictGreaterThan": (2, 2), "GreaterThan": (2, 2), "Eq": (2, 2), "Ne": (2, 2), "Lt": (2, 2), "Le": (2, 2),
    "Gt": (2, 2), "Ge": (2, 2), "And": (2, None), "Or": (2, None), "Not": (1, 1),
}
_POWERS = {"Pow": 1, "PowByNatural": 1, "FloatPow": 1, "LShift": 1, "RShift": 1}  # literal exponent <= 64
_CONSTANTS = frozenset({"true", "false"})
_MAX_EXPR = 4096
_MAX_DEPTH = 64
_TOKEN = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>[0-9]+)|(?P<str>'[^'\\\n]*')|(?P<op>//|[-+*%(),=])")


class _Bad(Exception):
    pass


class _ExprParser:
    """A recursive-descent parser of the symbolic expressions torch writes. Nothing is
    evaluated: the text is only accepted or refused.

        expr    := term (("+" | "-") term)*
        term    := unary ("*" unary)*                 (keys also: "//", "%")
        unary   := "-" unary | primary
        primary := INT | "(" expr ")" | call | NAME
        call    := FUNCTION "(" expr ("," expr)* ")"
                 | "Symbol(" 'NAME' ("," ASSUMPTION "=" ("True" | "False"))* ")"
                 | "Integer(" ["-"] INT ")" | "Rational(" ["-"] INT "," ["-"] INT ")"
                 | "Float(" 'DECIMAL' ["," "precision" "=" INT] ")"
        NAME    := a symbol name like s77 or u0 (declared in the file), or true / false
    """

    def __init__(self, text: str, infix_keys: bool = False):
        if len(text) > _MAX_EXPR:
            raise _Bad(f"longer than {_MAX_EXPR} characters")
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while True:
            while pos < len(text) and text[pos] == " ":
                pos += 1
            if pos >= len(text):
                break
            m = _TOKEN.match(text, pos)
            if not m:
                raise _Bad(f"unexpected {text[pos]!r} at character {pos}")
            self.tokens.append((m.lastgroup, m.group(), pos))
            pos = m.end()
        self.i = 0
        self.keys = infix_keys
        self.declared: set[str] = set()
        self.used: set[str] = set()

    def _peek(self, value: str | None = None, kind: str | None = None) -> bool:
        if self.i >= len(self.tokens):
            return False
        k, v, _ = self.tokens[self.i]
        return (value is None or v == value) and (kind is None or k == kind)

    def _take(self, value: str | None = None, kind: str | None = None) -> str:
        if not self._peek(value, kind):
            if self.i >= len(self.tokens):
                raise _Bad(f"ends early (expected {value or kind})")
            _, v, at = self.tokens[self.i]
            raise _Bad(f"unexpected {v[:20]!r} at character {at}")
        v = self.tokens[self.i][1]
        self.i += 1
        return v

    def parse(self) -> None:
        if not self.tokens:
            raise _Bad("empty")
        self.expr(0)
        if self.i != len(self.tokens):
            _, v, at = self.tokens[self.i]
            raise _Bad(f"unexpected {v[:20]!r} at character {at}")

    def expr(self, depth: int) -> int | None:
        if depth > _MAX_DEPTH:
            raise _Bad(f"nested more than {_MAX_DEPTH} deep")
        value = self.term(depth)
        while self._peek("+", "op") or self._peek("-", "op"):
            self.i += 1
            self.term(depth)
            value = None
        return value

    def term(self, depth: int) -> int | None:
        value = self.unary(depth)
        ops = ("*", "//", "%") if self.keys else ("*",)
        while any(self._peek(o, "op") for o in ops):
            self.i += 1
            self.unary(depth)
            value = None
        return value

    def unary(self, depth: int) -> int | None:
        if self._peek("-", "op"):
            self.i += 1
            value = self.unary(depth + 1)
            return None if value is None else -value
        return self.primary(depth)

    def _int(self) -> int:
        sign = -1 if self._peek("-", "op") else 1
        if sign < 0:
            self.i += 1
        digits = self._take(kind="int")
        if len(digits) > 19 or int(digits) >= 1 << 63:
            raise _Bad(f"integer {digits[:24]} out of range")
        return sign * int(digits)

    def primary(self, depth: int) -> int | None:
        if self._peek(kind="int"):
            return self._int()
        if self._peek("(", "op"):
            self.i += 1
            value = self.expr(depth + 1)
            self._take(")")
            return value
        name = self._take(kind="name")
        if not self._peek("(", "op"):
            if name in _CONSTANTS and not self.keys:
                return None
            if not _SYMBOL_NAME.fullmatch(name):
                raise _Bad(f"{name[:40]!r} is not a symbol name or a known function")
            self.used.add(name)
            return None
        self.i += 1
        if name == "Symbol" and not self.keys:
            symbol = self._take(kind="str")[1:-1]
            if not _SYMBOL_NAME.fullmatch(symbol):
                raise _Bad(f"{symbol[:40]!r} is not a symbol name torch writes")
            while self._peek(",", "op"):
                self.i += 1
                key = self._take(kind="name")
                if key not in _ASSUMPTIONS:
                    raise _Bad(f"unknown Symbol assumption {key[:40]!r}")
                self._take("=")
                if self._take(kind="name") not in ("True", "False"):
                    raise _Bad("a Symbol assumption that is not True or False")
            self._take(")")
            self.declared.add(symbol)
            return None
        if name == "Integer" and not self.keys:
            value = self._int()
            self._take(")")
            return value
        if name == "Rational" and not self.keys:
            self._int()
            self._take(",")
            if self._int() == 0:
                raise _Bad("a Rational with denominator 0")
            self._take(")")
            return None
        if name == "Float" and not self.keys:
            text = self._take(kind="str")[1:-1]
            if not _DECIMAL.fullmatch(text):
                raise _Bad(f"{text[:40]!r} is not a decimal number")
            if self._peek(",", "op"):
                self.i += 1
                self._take("precision")
                self._take("=")
                if not 1 <= self._int() <= 1024:
                    raise _Bad("a Float precision out of range")
            self._take(")")
            return None
        if name not in _FUNCTIONS:
            raise _Bad(f"{name[:40]!r} is not a function torch writes in a size")
        values = [self.expr(depth + 1)]
        while self._peek(",", "op"):
            self.i += 1
            values.append(self.expr(depth + 1))
        self._take(")")
        least, most = _FUNCTIONS[name]
        if len(values) < least or (most is not None and len(values) > most):
            raise _Bad(f"{name} with {len(values)} arguments")
        if name in _POWERS and values[_POWERS[name]] is not None and abs(values[_POWERS[name]]) > 64:
            raise _Bad(f"{name} with an exponent past 64")
        return None


def parse_sym_expr(text: str, *, range_key: bool = False) -> tuple[set[str], set[str]]:
    """(symbols declared, bare symbol names used) of an accepted expression; ValueError with the
    reason otherwise. `range_key`: the infix form torch uses for range constraint keys."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    try:
        p = _ExprParser(text, infix_keys=range_key)
        p.parse()
    except _Bad as e:
        raise ValueError(str(e)) from None
    return p.declared, p.used
