"""Language and kind of a file from its name, extension or shebang line."""

from __future__ import annotations

import re

# extension (lower case, with dot) -> language
EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python", ".pyx": "cython", ".pxd": "cython",
    ".c": "c", ".h": "c",
    ".cc": "c++", ".cpp": "c++", ".cxx": "c++", ".c++": "c++", ".hpp": "c++", ".hh": "c++",
    ".hxx": "c++", ".h++": "c++", ".inl": "c++", ".ipp": "c++", ".tpp": "c++",
    ".cu": "cuda", ".cuh": "cuda",
    ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala", ".groovy": "groovy",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript",
    ".go": "go", ".rs": "rust", ".rb": "ruby", ".php": "php", ".cs": "c#", ".swift": "swift",
    ".m": "objective-c", ".mm": "objective-c++",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".fish": "shell", ".ps1": "powershell",
    ".bat": "batchfile", ".cmd": "batchfile",
    ".pl": "perl", ".pm": "perl", ".lua": "lua", ".r": "r", ".jl": "julia",
    ".hs": "haskell", ".ml": "ocaml", ".mli": "ocaml", ".fs": "f#", ".erl": "erlang",
    ".ex": "elixir", ".exs": "elixir", ".clj": "clojure", ".lisp": "common-lisp", ".el": "emacs-lisp",
    ".scm": "scheme", ".f": "fortran", ".f90": "fortran", ".f95": "fortran", ".for": "fortran",
    ".asm": "assembly", ".s": "assembly", ".sql": "sql", ".proto": "protocol-buffer",
    ".thrift": "thrift", ".cmake": "cmake", ".mk": "makefile", ".tcl": "tcl", ".vim": "vim-script",
    ".dart": "dart", ".zig": "zig", ".v": "verilog", ".sv": "systemverilog", ".vhd": "vhdl",
    ".html": "html", ".htm": "html", ".css": "css", ".scss": "scss", ".xml": "xml",
    ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".ini": "ini",
    ".cfg": "ini", ".csv": "csv", ".tex": "tex", ".ipynb": "jupyter-notebook",
    ".md": "markdown", ".markdown": "markdown", ".rst": "restructuredtext",
    ".txt": "text", ".text": "text",
}

# exact file names with no telling extension
FILENAMES: dict[str, str] = {
    "makefile": "makefile", "gnumakefile": "makefile", "dockerfile": "dockerfile",
    "cmakelists.txt": "cmake", "readme": "text", "license": "text", "licence": "text",
    "copying": "text", "authors": "text", "changelog": "text", "news": "text", "notice": "text",
    "setup.cfg": "ini",
    # a package's description (README as long_description) in its dist-info / egg-info
    "metadata": "package-metadata", "pkg-info": "package-metadata",
}

SHEBANG_INTERPRETERS: dict[str, str] = {
    "python": "python", "sh": "shell", "bash": "shell", "zsh": "shell", "dash": "shell",
    "ksh": "shell", "perl": "perl", "ruby": "ruby", "node": "javascript", "php": "php",
    "lua": "lua", "tclsh": "tcl", "rscript": "r",
}

# Documentation formats read as natural language about code; plain text as natural language.
NL_CODE_LANGS = frozenset({"markdown", "restructuredtext", "tex", "package-metadata"})
NL_LANGS = frozenset({"text"})

# Aliases seen in record sources (The Stack writes "Python", "C++", "C#", ...).
LANG_ALIASES: dict[str, str] = {
    "cpp": "c++", "csharp": "c#", "c-sharp": "c#", "js": "javascript", "ts": "typescript",
    "py": "python", "golang": "go", "bash": "shell", "sh": "shell", "rst": "restructuredtext",
    "md": "markdown", "plain text": "text", "plaintext": "text",
}

_SHEBANG = re.compile(rb"^#!\s*(\S+)(?:\s+(\S+))?")


def kind_of(lang: str | None) -> str | None:
    if lang is None:
        return None
    if lang in NL_CODE_LANGS:
        return "nl_code"
    if lang in NL_LANGS:
        return "nl"
    return "code"


def normalise_lang(name: str | None) -> str | None:
    if name is None or not name.strip():
        return None
    key = name.strip().lower()
    return LANG_ALIASES.get(key, key)


def lang_from_name(filename: str) -> str | None:
    """Language from the file name alone, or None when the content must decide."""
    lower = filename.lower()
    if lower in FILENAMES:
        return FILENAMES[lower]
    dot = lower.rfind(".")
    if dot <= 0:  # no extension, or a dotfile
        return None
    return EXTENSIONS.get(lower[dot:])


def has_extension(filename: str) -> bool:
    return filename.rfind(".") > 0


def lang_from_shebang(head: bytes) -> str | None:
    """Language from a `#!` first line, e.g. `#!/usr/bin/env python3`."""
    match = _SHEBANG.match(head)
    if not match:
        return None
    prog = match.group(1).rsplit(b"/", 1)[-1]
    if prog == b"env" and match.group(2):
        prog = match.group(2)
    name = re.sub(rb"[\d.]+$", b"", prog).decode("ascii", "replace").lower()
    return SHEBANG_INTERPRETERS.get(name)


# `.h` is shared by C and C++; these only occur in C++ headers.
_CPP_MARKERS = re.compile(
    r"^\s*(namespace\s+\w+|template\s*<|class\s+\w+[^;]*\{|using\s+namespace)|std::|#include\s*<[a-z_]+>\s*$",
    re.MULTILINE,
)


def refine_header_lang(lang: str | None, path: str, text: str) -> str | None:
    """A `.h` file with C++ constructs is C++."""
    if lang == "c" and path.lower().endswith(".h") and _CPP_MARKERS.search(text):
        return "c++"
    return lang


def lang_of_path(path: str, head: bytes = b"") -> str | None:
    """Language from the name, falling back to the shebang for extension-less files."""
    name = path.rsplit("/", 1)[-1]
    lang = lang_from_name(name)
    if lang is None and not has_extension(name):
        lang = lang_from_shebang(head)
    return lang
