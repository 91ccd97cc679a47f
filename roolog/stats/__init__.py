"""Stats: how much duplication raw logs or a converted OUT hold (roolog stats, infer-schema), and the text and
HTML that show reports to people. Imports read, group and write.

`roolog.stats` is both this folder and the public function `roolog.stats(paths, key)`: once any module in here
is imported, Python binds the name `roolog.stats` to this package, so the package is callable as the function.
"""

import sys
import types


class _StatsPackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .statistics import stats

        return stats(*args, **kwargs)


sys.modules[__name__].__class__ = _StatsPackage
