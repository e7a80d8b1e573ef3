"""The demo API's defaults and styles, apart from its server (``demo.py`` imports
``aiohttp.web``), so that the command line's parser can name them without loading it."""

DEFAULT_ITEMS = 100_000
DEFAULT_PER_PAGE = 25
#: The pagination styles the demo API can serve.
STYLES = ("page", "offset", "cursor", "next-url", "link")
