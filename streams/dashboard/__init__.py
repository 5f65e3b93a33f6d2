"""`billing dashboard`: a read-only web page over the daily billing records.

`streams.dashboard.server` holds the aiohttp app (`streams.cli.dashboard` serves it), `streams.dashboard.data`
the validated queries (all built by `streams.ops.totals`), `static/` the page (plain HTML, JS, CSS).
"""
