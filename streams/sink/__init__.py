"""Everything that writes Postgres: the flush transaction (`postgres`), every statement it and
the day closer and `rebuild` run (`sql`), connections (`pg`), migrations, dead-letter state.
"""
