"""The analytics store: every normalised event, queried for timelines, summaries and campaign reports.

`analytics.store.open_store(url, data_dir)` opens the DuckDB or ClickHouse backend behind one interface;
the EventSink actor (`actors/event_sink/`) feeds it from the Redis event stream. See docs/analytics.md.
"""
