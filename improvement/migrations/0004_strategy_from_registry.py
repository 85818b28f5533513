# Strategy choices come from the strategy registry; the predictor's baseline moved modules.

from django.db import migrations, models

import improvement.strategies.registry

OLD_PATH = "improvement.nn.predictor.MeanGainPerStrategy"
NEW_PATH = "improvement.nn.gain_model.MeanGainPerStrategy"


def forward(apps, schema_editor):
    apps.get_model("models_registry", "Task").objects.filter(algorithm_path=OLD_PATH).update(algorithm_path=NEW_PATH)


def backward(apps, schema_editor):
    apps.get_model("models_registry", "Task").objects.filter(algorithm_path=NEW_PATH).update(algorithm_path=OLD_PATH)


class Migration(migrations.Migration):

    dependencies = [
        ('improvement', '0003_config_upper_bounds'),
        ('models_registry', '0002_servingstate_servingswitch'),
    ]

    operations = [
        migrations.AlterField(
            model_name='improvementrun',
            name='strategy',
            field=models.CharField(choices=improvement.strategies.registry.strategy_choices, max_length=40),
        ),
        migrations.RunPython(forward, backward),
    ]
