"""Template content: compiling (Liquid, MJML, CSS inlining, text derivation) and rendering.

At the layer of `store` and `providers`: it imports `schemas` and `security` only. Everything costly
(MJML, CSS inlining, deriving the text part) happens once per version in `compile.py`; rendering one
recipient (`render.py`) is only the Liquid render of the compiled parts.
"""
