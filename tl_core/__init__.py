"""TL Studio engine: transfer learning on your own images. No Streamlit in here.

Usable from Python (``from tl_core import ...``) and from the command line
(``python -m tl_core --help``).
"""

__version__ = "0.1.0"
