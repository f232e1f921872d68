"""Executable sympy derivations of every identity the toolkit relies on (``mi-bounds verify``)."""
