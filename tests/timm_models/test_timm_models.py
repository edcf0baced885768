"""timm's own model tests on every model we register: timm 1.0.31's ``tests/test_models.py``, fetched from the
release at collection (``timm_source``, checksums checked) and executed as this module, so pytest collects its
test functions here; ``conftest.py`` narrows them to our models (``timm_selection``)."""

from timm_source import timm_test_file

_source = timm_test_file()
exec(compile(_source.read_text(), str(_source), "exec"))  # timm's code under its own file name in tracebacks
