"""Student search: the space, zero-cost proxies and the search loop."""
