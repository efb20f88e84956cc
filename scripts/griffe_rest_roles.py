"""A griffe extension for the API reference: the package's docstrings use Sphinx roles
(``:class:`X```, ``:func:`~pkg.f```) and reST literal blocks (``text::``), which Markdown
would show verbatim. Before mkdocstrings renders a docstring, a role becomes inline code
(the name as a reader would write it) and a closing ``::`` becomes ``:``. The docstrings
themselves are unchanged. Loaded by mkdocs.yml (mkdocstrings' ``extensions`` option).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const|ref):`~?([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::$", re.MULTILINE)


def _markdown(text: str) -> str:
    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        if match.group(0).split("`", 1)[1].startswith("~"):
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    return _LITERAL.sub(":", _ROLE.sub(role, text))


class RestRoles(Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = _markdown(docstring.value)
