"""The bundle's own importer and main guard, embedded in both forms (the compact form minifies them)."""

LOADER = '''
import importlib.abc
import importlib.util
import linecache
import os
import sys


class BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports pgolf.* from FILES (the sources embedded below), never from the file system."""

    def find_spec(self, name, path=None, target=None):
        if name != "pgolf" and not name.startswith("pgolf."):
            return None
        key = name.replace(".", "/")
        for f in (key + ".py", key + "/__init__.py"):
            if f in FILES:
                return importlib.util.spec_from_loader(name, self, origin=f, is_package=f.endswith("__init__.py"))
        why = LEFT_OUT.get(name, "not on the training path")
        raise ModuleNotFoundError(f"{name} is not in this bundle: {why}", name=name)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        f = module.__spec__.origin
        src = FILES[f]
        linecache.cache[f] = (len(src), None, src.splitlines(True), f)
        if module.__name__ == "pgolf":
            module.__bundle_file__ = os.path.abspath(__file__)
        exec(compile(src, f, "exec"), module.__dict__)


def main():
    sys.meta_path.insert(0, BundleImporter())
    from pgolf.standalone import main as run

    return run(CONFIG)
'''

MAIN = '''
if __name__ == "__main__":
    sys.exit(main())
'''
