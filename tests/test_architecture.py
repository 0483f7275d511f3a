"""The layers of the code base, and the direction of their imports, checked.

- router/ (the room engine) and peers/ (membership, the peer transport) import nothing of
  mesh/; the engine's roles import no other role;
- mesh/wire/ (what both sides of the client protocol share) imports nothing else of mesh/;
- mesh/client/ (the client library) imports mesh/wire/ only;
- mesh/node/ (the node and its front doors) imports neither the client library nor the CLI;
- tools/ import mesh/client/ and mesh/wire/ only; perf/ those and mesh/local/ (which starts
  node processes on this machine); neither imports the node or the CLI.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The room engine's roles: each a module of its own, talking through internal events.
ROLES = (
    "router.forwarding",
    "router.coordinator",
    "router.replica",
    "router.quorum_reads",
    "router.fan_out",
    "router.subscriptions",
    "router.who",
    "router.handoff",
    "router.anti_entropy",
    "router.user_rooms",
)

# (package, what it may import of the project besides itself)
LAYERS = {
    "router": ("router",),
    "peers": ("peers",),
    "mesh.wire": ("router",),
    "mesh.client": ("mesh.wire", "router"),
    "mesh.local": ("mesh.node", "mesh.wire", "peers"),
    "mesh.node": ("mesh.wire", "router", "peers"),
    "tools": ("mesh.client", "mesh.wire", "router"),
    "perf": ("mesh.client", "mesh.wire", "mesh.local", "router"),
}
PROJECT = ("mesh", "router", "peers", "tools", "perf", "tests")


def modules_of(package: str) -> Iterator[tuple[str, Path]]:
    base = ROOT / package.replace(".", "/")
    for path in sorted(base.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        yield ".".join(part for part in relative.parts if part != "__init__"), path


def imports_of(path: Path) -> set[str]:
    """Every project module the file imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PROJECT}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_point_one_way(package: str) -> None:
    allowed = (package, *LAYERS[package])
    wrong = [
        f"{module} imports {name}"
        for module, path in modules_of(package)
        for name in sorted(imports_of(path))
        if not any(within(name, layer) for layer in allowed)
        # `from mesh import x` names the package mesh itself: judged by x.
        and name != "mesh"
    ]
    assert not wrong, "\n".join(wrong)


def test_no_role_of_the_engine_imports_another() -> None:
    wrong = [
        f"{role} imports {other}"
        for role in ROLES
        for other in ROLES
        if other != role
        and any(within(name, other) for name in imports_of(ROOT / f"{role.replace('.', '/')}.py"))
    ]
    assert not wrong, "\n".join(wrong)


def test_mesh_holds_packages_only() -> None:
    loose = sorted(
        path.name
        for path in (ROOT / "mesh").glob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
    )
    assert not loose, f"modules outside mesh's packages: {loose}"
