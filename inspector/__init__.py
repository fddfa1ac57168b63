"""inspector: check product images with a vision-language model and compare the answers with the catalogue."""

__version__ = "0.1.0"


def _register_native_models() -> None:
    """Make `AutoConfig`/`AutoProcessor`/`AutoModelForImageTextToText` load our native model types.

    Done on import so that `import inspector` is all a user needs before `from_pretrained(folder)`.
    """
    try:
        from inspector.models import register
    except ImportError:  # transformers/torch missing: the pure-Python parts still work
        return
    register()


_register_native_models()
