"""Lark grammars of netdef, installed as the package data ``netdef.grammar``."""
