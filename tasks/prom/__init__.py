"""prom_pars's parts, one job each; the task itself is tasks/prom_parser.py (what config.py imports).

| module | job |
| --- | --- |
| ``parse.py`` | one product page's HTML -> status_id, price, order count, rating (pure) |
| ``fetch.py`` | the fetch step's contract: the Fetcher protocol, FetchError/Refused, the allowed-hosts check |
| ``fetch_http.py`` | the requests backend (the default): retries, backoff, redirects hop by hop, cookies per host |
| ``fetch_browser.py`` | the selenium backend: a Chrome confined to the allowed hosts, headless or visible |
| ``captcha.py`` | the captcha hand-over: stop the batch, or switch to a visible browser and wait for a person |
| ``batch.py`` | the products in order, each one's trouble made a row (only a captcha stops the batch) |

Importing any of them stays cheap: requests, selectolax and selenium are imported when a task
runs. Names with a leading underscore are private to this package, not to their module.
"""

import logging

# The task's logger outside a worker (in one, prom_pars logs through executor.api.get_logger()).
log = logging.getLogger("task.prom_pars")
