#!/usr/bin/env python3
"""Rebuilds the TFLite flatbuffers schema (schema.fbs) from flatc's Python output.

No package on the registries we can reach ships the TFLite `schema.fbs` itself, but the
`ai-edge-litert` wheel ships `ai_edge_litert/schema_py_generated.py`, which flatc generated from it.
That file carries everything the binary format depends on: every table with its slot count, each
field's slot, scalar type and default, vector element types, strings, sub-tables, unions with their
members, enums with their values, and the file identifier. This script turns it back into an
equivalent schema, which `tools/gen-tflite-schema.sh` then compiles to Rust with flatc.

What the Python output does not carry, and how we fill it in:
- field names: Python has camelCase; we convert back to snake_case (`builtinOptions2` becomes
  `builtin_options2` instead of `builtin_options_2`: the name is not part of the binary format).
- deprecated fields: slots without an `Add` function are declared `deprecated_N: int (deprecated)`.
- enum types of scalar fields: Python stores them as plain integers. We type a field with an enum
  only where the schema's naming makes it certain (ENUM_FIELDS below, or a field named like the
  enum); other enum-valued fields stay plain integers of the same width (same bytes on disk).
- `force_align` on raw buffer data (FORCE_ALIGN below).
The check that the result is faithful: flatc's Python output for the rebuilt schema must equal the
input file line for line (`--check` does this).

Usage: tflite_fbs_from_python.py schema_py_generated.py out.fbs [--check FLATC]
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SCALAR_OF_PREPEND = {
    "Bool": "bool", "Float32": "float", "Float64": "double", "Int8": "byte", "Uint8": "ubyte",
    "Int16": "short", "Uint16": "ushort", "Int32": "int", "Uint32": "uint", "Int64": "long",
    "Uint64": "ulong",
}

# (table, field) -> enum, for enum-typed fields whose name does not spell the enum.
ENUM_FIELDS = {
    ("Tensor", "type"): "TensorType",
    ("OperatorCode", "builtin_code"): "BuiltinOperator",
    ("Operator", "custom_options_format"): "CustomOptionsFormat",
    ("DimensionMetadata", "format"): "DimensionType",
    ("*", "fused_activation_function"): "ActivationFunctionType",
}

FORCE_ALIGN = {("Buffer", "data"): 16, ("CustomQuantization", "custom"): 16}


def snake(name):
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def blocks(src):
    """Top-level `class`/`def` blocks: name -> body text."""
    out = {}
    order = []
    for m in re.finditer(r"^(class|def) (\w+)\(.*?(?=^(?:class|def) |\Z)", src, re.S | re.M):
        out[m.group(2)] = m.group(0)
        order.append((m.group(1), m.group(2)))
    return out, order


def parse(src):
    b, order = blocks(src)
    ident = re.search(r'BufferHasIdentifier\(buf, offset, b"((?:\\x[0-9A-F]{2})+)"', src)
    ident = bytes(int(h, 16) for h in re.findall(r"\\x([0-9A-F]{2})", ident.group(1))).decode()
    unions = {name[: -len("Creator")] for kind, name in order if kind == "def" and name.endswith("Creator")}
    tables = [n for k, n in order if k == "class" and "def GetRootAs(" in b[n]]
    enums = [n for k, n in order if k == "class" and n not in tables and "_tab" not in b[n]
             and "def __init__" not in b[n]]
    decls = []
    for k, n in order:
        if k != "class" or (n not in tables and n not in enums):
            continue
        if n in enums:
            values = re.findall(r"^    (\w+) = (-?\d+)$", b[n], re.M)
            if n in unions:
                members = re.findall(r"if unionType == %s\.(\w+):\n\s+return (\w+)T\.InitFromBuf" % n,
                                     b[n + "Creator"])
                decls.append(("union", n, values, dict(members)))
            else:
                decls.append(("enum", n, values, None))
        else:
            decls.append(("table", n, table_fields(n, b), None))
    return ident, decls


def table_fields(t, b):
    body = b[t]
    nslots = int(re.search(r"builder\.StartObject\((\d+)\)", b[t + "Start"]).group(1))
    fields = {}
    for name, text in b.items():
        if not name.startswith(t + "Add") or name[len(t) + 3:] == "" :
            continue
        m = re.search(r"^def %sAdd(\w+)\(builder, (\w+)\):\n\s+builder\.Prepend(\w+?)Slot\((\d+), (.*?), ([^,()]+)\)\s*$"
                      % re.escape(t), text, re.M)
        if not m:
            continue
        acc, pyname, kind, slot, _, default = m.groups()
        fields[int(slot)] = (acc, pyname, kind, default.strip())
    out = []
    for slot in range(nslots):
        if slot not in fields:
            out.append((f"deprecated_{slot}", "int", None, "(deprecated)"))
            continue
        acc, pyname, kind, default = fields[slot]
        fname = snake(pyname)
        if kind == "UOffsetTRelative":
            ty = offset_type(t, acc, body + b.get(t + "T", ""))
            if ty is None:  # the `_type` slot of a union is implicit in the schema
                continue
            attr = f"(force_align: {FORCE_ALIGN[(t, fname)]})" if (t, fname) in FORCE_ALIGN else None
            out.append((fname, ty, None, attr))
        else:
            if kind == "Uint8" and acc.endswith("Type") and re.search(
                    r"def %s\(self\):.*?self\._tab\.Union\(" % re.escape(acc[:-4]), body, re.S):
                continue  # union type tag: declared by the union field itself
            ty = SCALAR_OF_PREPEND[kind]
            enum = ENUM_FIELDS.get((t, fname)) or ENUM_FIELDS.get(("*", fname))
            if kind == "Bool":
                default = "true" if default in ("True", "1") else "false"
            out.append((fname, ty, default, enum))
    return out


def offset_type(t, acc, body):
    m = re.search(r"    # %s\n    def %s\(self(, j)?\):\n(.*?)(?=\n    # |\Z)" % (re.escape(t), re.escape(acc)),
                  body, re.S)
    code = m.group(2)
    vec = m.group(1) is not None
    if "self._tab.Union(" in code:
        u = re.search(r"def %sType\(self\)" % re.escape(acc), body)
        assert u, (t, acc)
        return union_of(t, acc, body)
    if vec:
        if "self._tab.String(" in code:
            return "[string]"
        s = re.search(r"number_types\.(\w+)Flags, a \+", code)
        if s:
            return "[%s]" % SCALAR_OF_PREPEND[s.group(1)]
        o = re.search(r"obj = (\w+)\(\)", code)
        return "[%s]" % o.group(1)
    if "self._tab.String(" in code:
        return "string"
    o = re.search(r"obj = (\w+)\(\)", code)
    assert o, (t, acc, code)
    return o.group(1)


def union_of(t, acc, body):
    # The object API names the union: `self.x = UnionCreator(self.xType, table.X())`.
    m = re.search(r"= (\w+)Creator\(self\.\w+, \w+\.%s\(\)\)" % re.escape(acc), body)
    if m:
        return m.group(1)
    raise SystemExit(f"cannot find the union type of {t}.{acc}")


def render(ident, decls, fbs_name):
    enum_names = {n for kind, n, _, _ in decls if kind == "enum"}
    lines = [
        "// TFLite flatbuffers schema, rebuilt by tools/tflite_fbs_from_python.py from the",
        "// `schema_py_generated.py` that flatc generated from TensorFlow's schema.fbs",
        "// (Copyright The TensorFlow Authors, Apache License 2.0), as shipped in the ai-edge-litert wheel.",
        "// Do not edit: run tools/gen-tflite-schema.sh.",
        "",
        "namespace tflite;",
        "",
    ]
    for kind, n, a, members in decls:
        if kind == "enum":
            lo = min(int(v) for _, v in a)
            hi = max(int(v) for _, v in a)
            base = enum_base.get(n) or ("byte" if -128 <= lo and hi < 128 else "int")
            lines.append(f"enum {n} : {base} {{")
            lines += [f"  {k} = {v}," for k, v in a]
            lines += ["}", ""]
        elif kind == "union":
            lines.append(f"union {n} {{")
            lines += [f"  {members[k]}," for k, v in a if k != "NONE"]
            lines += ["}", ""]
        else:
            lines.append(f"table {n} {{")
            for fname, ty, default, extra in a:
                if extra and extra in enum_names:
                    ty = extra
                    default = next((k for k, v in dict_of(decls)[extra] if int(v) == int(default)), default)
                    extra = None
                d = f" = {default}" if default is not None and default not in ("0", "0.0", "false") else ""
                if ty == "float" and d:
                    d = f" = {float(default)}"
                attr = f" {extra}" if extra else ""
                lines.append(f"  {fname}:{ty}{d}{attr};")
            lines += ["}", ""]
    lines += [f'root_type Model;', "", f'file_identifier "{ident}";', 'file_extension "tflite";', ""]
    return "\n".join(lines)


def dict_of(decls):
    return {n: a for kind, n, a, _ in decls if kind == "enum"}


enum_base = {}


def assign_enum_types(decls):
    """Each enum gets the scalar type of the fields that use it; fields whose width disagrees with
    the name-based guess stay plain integers."""
    names = {n for kind, n, _, _ in decls if kind == "enum"}
    pascal = {n.lower(): n for n in names}
    for kind, t, fields, _ in decls:
        if kind != "table":
            continue
        for i, (fname, ty, default, extra) in enumerate(fields):
            if default is None or ty in ("bool", "float", "double"):
                continue
            enum = extra or pascal.get(fname.replace("_", ""))
            if enum not in names:
                continue
            if enum_base.setdefault(enum, ty) != ty:
                continue
            fields[i] = (fname, ty, default, enum)


def main():
    src_path, out_path = sys.argv[1], sys.argv[2]
    src = Path(src_path).read_text()
    ident, decls = parse(src)
    assign_enum_types(decls)
    fbs = render(ident, decls, Path(out_path).name)
    Path(out_path).write_text(fbs)
    if len(sys.argv) > 3 and sys.argv[3] == "--check":
        flatc = sys.argv[4]
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([flatc, "--python", "--gen-object-api", "--gen-onefile", "-o", d, out_path],
                           check=True)
            gen = next(Path(d).rglob("*_generated.py")).read_text()
        # Blank lines and the position of `import flatbuffers` differ between flatc releases.
        a = [l for l in gen.splitlines() if l.strip() and l != "import flatbuffers"]
        b = [l for l in src.splitlines() if l.strip() and l != "import flatbuffers"]
        if a != b:
            import difflib
            diff = list(difflib.unified_diff(b, a, "original", "rebuilt", lineterm="", n=1))
            sys.stderr.write("\n".join(diff[:80]) + "\n")
            raise SystemExit(f"rebuilt schema differs from {src_path} ({len(diff)} diff lines)")
        print(f"check passed: flatc's Python for {out_path} equals {src_path}")


if __name__ == "__main__":
    main()
