"""Starts moto's server (scripts/stack.sh) with two patches that keep its memory and CPU flat
under many DynamoDB transactions (`make scale`: 20,000 objects bound and marked done in
TransactWriteItems of 100).

1. moto records every model instance it ever creates (BaseModel.__new__ appends it to its
   class's `instances_tracked`, kept until /moto-api/reset) for its dashboard. Deep copies
   count: UpdateItem copies the item twice, and TransactWriteItems copies the whole table,
   every item in it. None of them is ever freed. Here nothing is recorded: the lists are
   read only by the dashboard (/moto-api/data.json, which the project does not use) and by
   S3's reset, which also closes every key its buckets still hold; a key no bucket holds is
   freed (and its buffer closed) by the garbage collector instead.

2. TransactWriteItems snapshots each table it writes, to roll back on a failed condition,
   but does so once per item of the transaction (100 deep copies of the whole table for
   100 items) where one is the same: nothing is written until every snapshot is taken.
   The patch adds that one condition; the rollback is unchanged.

Measured on moto 5.2.5: 20 batches of 100 objects claimed, bound and marked done (40
TransactWriteItems, the table growing to 2,000 items) took moto to 9.6 GB in 219 s; patched,
91 MB in 12 s. `make scale OBJECTS=2000 BUILD=debug`: 6.1 GB and 241 s, patched 136 MB
and 67 s (5,000 objects: 227 MB).
"""

import __future__
import inspect
import sys
import textwrap

import moto
from moto.core.common_models import BaseModel

PATCHED_FOR = "5.2.5"
if moto.__version__ != PATCHED_FOR:
    sys.exit(
        f"scripts/moto_start.py patches moto {PATCHED_FOR}, found {moto.__version__}: "
        "check whether the patches are still needed and still apply, then update PATCHED_FOR"
    )


# 1. Create model instances as BaseModel.__new__ does, without recording them.
def _new_untracked(cls, *args, **kwargs):
    return super(BaseModel, cls).__new__(cls)


BaseModel.__new__ = staticmethod(_new_untracked)


# 2. One snapshot per table per transaction: the source of moto's own method with one
#    condition added, compiled in its module so it sees the same names.
def _patch_transact_write_items():
    import moto.dynamodb.models as ddb_models

    method = ddb_models.DynamoDBBackend.transact_write_items
    source = textwrap.dedent(inspect.getsource(method))
    old = "if table_name and table_name in self.tables:"
    new = (
        "if table_name and table_name in self.tables"
        " and table_name not in original_table_state:"
    )
    if source.count(old) != 1:
        sys.exit("scripts/moto_start.py: moto's transact_write_items changed; review the patch")
    namespace = {}
    first_line = inspect.getsourcelines(method)[1]
    code = compile(
        "\n" * (first_line - 1) + source.replace(old, new),  # tracebacks show moto's lines
        inspect.getsourcefile(method),
        "exec",
        flags=__future__.annotations.compiler_flag,
        dont_inherit=True,
    )
    exec(code, ddb_models.__dict__, namespace)
    ddb_models.DynamoDBBackend.transact_write_items = namespace["transact_write_items"]


_patch_transact_write_items()

from moto.server import main  # noqa: E402  (after the patches, before the server starts)

sys.exit(main())
