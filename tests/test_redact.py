"""Credentials never reach messages: URL redaction."""

import pytest

from streampage._redact import redact_url


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("https://api.example.com/items?api_key=s3cret&page=2", "s3cret"),
        ("https://api.example.com/items?ACCESS_TOKEN=s3cret", "s3cret"),
        ("https://user:s3cret@api.example.com/items", "s3cret"),
        ("https://api.example.com/items?token=s3cret&token=other", "other"),
    ],
)
def test_secrets_are_redacted(url: str, secret: str) -> None:
    shown = redact_url(url)
    assert secret not in shown
    assert "REDACTED" in shown


def test_other_parameters_are_kept() -> None:
    shown = redact_url("https://api.example.com/items?api_key=x&page=2&per_page=50")
    assert "page=2" in shown and "per_page=50" in shown
    assert redact_url("https://api.example.com/items?page=2") == (
        "https://api.example.com/items?page=2"
    )
