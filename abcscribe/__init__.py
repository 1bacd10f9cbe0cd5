"""abcscribe: automatic music transcription to ABC notation with audio language models."""

import sys

__version__ = "0.1.0"


def register_with_transformers() -> None:
    """Make transformers' Auto classes know abcscribe's model folders (``model_type``
    ``abcscribe_composed``): after it, plain ``AutoModel.from_pretrained(folder)`` loads them."""
    from abcscribe.core.models.modeling_abcscribe import register

    register()


class _RegisterWithTransformers:
    """A finder that steps aside for ``transformers`` and registers abcscribe's classes once
    that import is done. ``import abcscribe`` alone must stay light (``abcscribe --help``, the
    command modules import neither torch nor transformers), yet a user who imports abcscribe
    and then loads a folder with ``AutoModel`` should find its classes registered."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # what the other finders make of it
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            try:
                register_with_transformers()
            except ImportError:  # pragma: no cover - no torch: nothing to register
                pass

        spec.loader.exec_module = exec_and_register
        return spec


if "transformers" in sys.modules:
    register_with_transformers()
else:
    sys.meta_path.insert(0, _RegisterWithTransformers())
