"""`billing dashboard`: a read-only web page over the daily billing records.

`streams.dashboard.server` holds the aiohttp app and the click command, `streams.dashboard.data`
the validated queries (all built by `streams.ops.totals`), `static/` the page (plain HTML, JS, CSS).
"""
