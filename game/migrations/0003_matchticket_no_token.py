# Quick match no longer stores a raw seat token between pairing and telling the player:
# the token is derived from SECRET_KEY when `matched` is sent (game/matchmaking.py).
#
# Safe for a rolling deploy: the code leaves the column now, the database keeps it for one
# more release, emptied and with a database default, so replicas still running the old code
# (which write the column) and new ones (which do not) both insert tickets. A later
# migration drops it.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("game", "0002_results_leaderboard_match"),
    ]

    operations = [
        migrations.AlterField(
            model_name="matchticket",
            name="token",
            field=models.CharField(max_length=64, blank=True, default="", db_default=""),
        ),
        migrations.RunSQL(
            "UPDATE game_matchticket SET token = '' WHERE token <> ''",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.RemoveField(model_name="matchticket", name="token")],
        ),
    ]
