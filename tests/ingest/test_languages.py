from codemill.ingest.languages import kind_of, lang_of_path, normalise_lang, refine_header_lang


def test_extension_and_filename():
    assert lang_of_path("pkg/mod.py") == "python"
    assert lang_of_path("include/Python.h") == "c"
    assert lang_of_path("src/a.cpp") == "c++"
    assert lang_of_path("CMakeLists.txt") == "cmake"
    assert lang_of_path("docs/index.rst") == "restructuredtext"
    assert lang_of_path("lib/libfoo.so") is None
    assert lang_of_path("luigi-3.8.1.dist-info/METADATA") == "package-metadata"


def test_shebang_decides_extensionless_files():
    assert lang_of_path("bin/tool", b"#!/usr/bin/env python3\nprint(1)\n") == "python"
    assert lang_of_path("bin/run", b"#!/bin/bash\necho hi\n") == "shell"
    assert lang_of_path("bin/blob", b"\x7fELF\x02") is None
    # an extension wins over a shebang
    assert lang_of_path("x.sh", b"#!/usr/bin/python\n") == "shell"


def test_kinds_and_aliases():
    assert kind_of("python") == "code"
    assert kind_of("markdown") == "nl_code"
    assert kind_of("text") == "nl"
    assert normalise_lang("C++") == "c++"
    assert normalise_lang("Python") == "python"
    assert normalise_lang("  ") is None


def test_cpp_headers_are_told_from_c_headers():
    c_header = "#ifndef X_H\n#define X_H\nint f(void);\n#endif\n"
    cpp_header = "#pragma once\n#include <vector>\nnamespace at {\nclass Tensor {\n};\n}\n"
    assert refine_header_lang("c", "x.h", c_header) == "c"
    assert refine_header_lang("c", "t.h", cpp_header) == "c++"
    assert refine_header_lang("c", "x.c", cpp_header) == "c"
