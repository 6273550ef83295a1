"""Fleet-wide state on Redis (optional, REDIS_URL): the rate limits, the answer cache, the epoch.

``link.py`` owns the connection and what happens when Redis fails (bounded calls, fallback,
backoff, one warning per transition); ``answers.py`` keeps the answers, their single
flights across instances, the cache epoch and the fleet's hit and miss counters. The rate
limiter (chatbot/web/ratelimit.py) puts `limits`' Redis storage on the same link.
"""

from chatbot.shared_state.answers import SharedAnswers
from chatbot.shared_state.link import RedisLink, SharedStateDown, open_link

__all__ = ["RedisLink", "SharedAnswers", "SharedStateDown", "open_link"]
