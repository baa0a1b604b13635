from .gallery import *  # noqa: F401,F403
