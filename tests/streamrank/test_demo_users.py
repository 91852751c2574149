"""Which users the demo shows: those on the site at the stream's end, most active first."""

import pandas as pd

from streamrank.demo import ON_SITE_S, users_on_site


def test_the_demo_shows_users_on_the_site_before_busier_ones_who_left() -> None:
    end = 1_000_000.0
    rows = [("gone", end - 30 * 86400 + i, "1") for i in range(50)]  # busiest, left a month ago
    rows += [("here", end - 3600 + i, "1") for i in range(10)]
    rows += [("also-here", end - ON_SITE_S + 60 + i, "1") for i in range(5)]
    rows += [("last", end, "1")]
    window = pd.DataFrame(rows, columns=["user_id", "ts", "item_id"])
    assert users_on_site(window, 3) == ["here", "also-here", "last"]
    assert users_on_site(window, 5) == ["here", "also-here", "last", "gone"]  # then the rest
