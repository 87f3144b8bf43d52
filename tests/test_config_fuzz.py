"""Property test: any mutation of a valid config is either accepted or refused with DfkdError."""
import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfkd import config as dc
from dfkd import slices
from dfkd.errors import DfkdError

from conftest import tiny_config

BASE = tiny_config()
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(0, 5), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def paths(node, prefix=()):
    """Every (path) to a value inside a nested dict/list config."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


ALL_PATHS = [p for p in paths(BASE) if p]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["set", "delete", "add"]), VALUES,
                          st.text(min_size=1, max_size=8)), min_size=1, max_size=4))
def test_mutations_are_accepted_or_refused_cleanly(mutations):
    config = copy.deepcopy(BASE)
    for path, action, value, new_key in mutations:
        parent = config
        try:
            for part in path[:-1]:
                parent = parent[part]
            if action == "set":
                parent[path[-1]] = value
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[new_key] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    try:
        validated = dc.validate_config(config)
    except DfkdError as error:
        assert str(error)
    else:
        for target in validated["run_targets"]:
            for name in slices.target_sets(validated, target):
                slices.assemble_slice(validated, target, name)
            slices.teacher_slice(validated, target)
            slices.student_slice(validated, target)
