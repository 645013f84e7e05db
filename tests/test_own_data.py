"""Any net on any dataset: a head sized by the dataset's classes, ImageNet nets scored at a wnid
dataset's logits (against torchvision's own net), a fresh head fine-tuned where the classes are
not ImageNet's, and the refusals of validate in one line (channels, LeNet-5's prototypes,
epochs 0 on a fresh head, from pinned classes or a local folder's class folders; a dataset
name that cannot name a stage)."""

import runpy
from pathlib import Path

import pytest
import torch
import yaml

from cnn_internals.core.errors import UserError
from cnn_internals.data.wnids import imagenet_names
from cnn_internals.models import NETS, Classes

REPO = Path(__file__).resolve().parents[1]
WNIDS = ("n01440764", "n02102040", "n03888257")                 # tench, English springer, parachute
PLAIN = Classes(("cat", "dog", "fox"))


def wnid_classes() -> Classes:
    names = imagenet_names()
    return Classes.of([{"wnid": w, "name": names[w]} for w in WNIDS])


def torchvision_state(seed: int = 0) -> dict:
    """A state dict in the shape of torchvision's published ResNet-18 (1000 classes), random."""
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    return resnet18(weights=None, num_classes=1000).state_dict()


def test_a_wnid_dataset_is_scored_at_its_imagenet_logits_as_torchvisions_net():
    from torchvision.models import resnet18

    net, state = NETS["resnet18"], torchvision_state()
    classes = wnid_classes()
    assert classes.imagenet == (0, 217, 701)                      # by hand: sorted wnids, ImageNet's order
    model = net.build({"weights": "imagenet"}, classes).eval()
    net.load_imagenet(model, state)
    theirs = resnet18(weights=None, num_classes=1000).eval()
    theirs.load_state_dict(state)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), theirs(x)[:, [0, 217, 701]])


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "googlenet"])
def test_imagenet_weights_on_other_classes_get_a_fresh_head_and_every_other_weight(name):
    net = NETS[name]
    torch.manual_seed(0)
    model = net.build({"weights": "imagenet"}, PLAIN)
    head = {"resnet18": "fc", "vgg16": "classifier.6", "googlenet": "fc"}[name]
    assert isinstance(model.get_submodule(head), torch.nn.Linear) and model.get_submodule(head).out_features == 3
    with torch.device("meta"):
        theirs = net.build({"weights": "imagenet"}).state_dict()   # the 1000-class layout, read at ten
    state = {key.replace(f"{head}.0.", f"{head}."): torch.randn(t.shape, generator=torch.Generator().manual_seed(i))
             if t.is_floating_point() else torch.zeros(t.shape, dtype=t.dtype) for i, (key, t) in enumerate(theirs.items())}
    if name == "googlenet":                                        # the file also holds the aux heads
        from cnn_internals.models.googlenet import aux_keys
        state.update({key: torch.zeros(1) for key in aux_keys()})
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(f"{head}.")}
    net.load_imagenet(model, state)
    for key, value in model.state_dict().items():
        expected = fresh[key] if key.startswith(f"{head}.") else state[key]
        assert torch.equal(value, expected), key


def test_fine_tuning_the_fresh_head_lowers_the_loss():
    """ResNet-18 from (random, torchvision-shaped) ImageNet weights on three plain classes:
    the training loss of a fixed batch falls over a few SGD steps (the head and the rest)."""
    net = NETS["resnet18"]
    torch.manual_seed(0)
    model = net.build({"weights": "imagenet"}, PLAIN)
    net.load_imagenet(model, torchvision_state())
    model.train()
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 3, 224, 224, generator=generator), torch.tensor([0, 1, 2, 0, 1, 2])
    loss_fn, optimizer = net.loss({"weights": "imagenet"}), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_a_head_of_the_datasets_size_from_scratch():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    for name in ("alexnet", "zfnet", "resnet18"):
        model = NETS[name].build({"weights": "scratch"}, PLAIN).eval()
        with torch.no_grad():
            assert model(x).shape == (2, 3), name


def test_lenet5_on_other_classes_needs_learned_prototypes():
    lenet = NETS["lenet5"]
    with pytest.raises(UserError, match="set train.lenet5.prototypes: learned"):
        lenet.build({}, PLAIN)
    torch.manual_seed(0)
    model = lenet.build({"prototypes": "learned"}, PLAIN)
    prototypes = model.rbf.prototypes
    assert isinstance(prototypes, torch.nn.Parameter) and prototypes.shape == (3, 84)
    assert set(prototypes.unique().tolist()) == {-1.0, 1.0}
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    # the ten digits keep the paper's bitmaps, learned or not
    assert torch.equal(lenet.build({"prototypes": "learned"}).rbf.prototypes, lenet.build({}).rbf.prototypes)


@pytest.fixture
def validate(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "stages"))           # where the stage finds _bootstrap
    return runpy.run_path(str(REPO / "stages/validate.py"))["validate"]


def committed() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["photos"] = {"kind": "imagefolder", "source": "/nowhere/photos", "val_fraction": 0.2, "size": 256}
    params["pipeline"]["datasets"] = ["mnist", "photos", "imagenette"]
    return params


@pytest.mark.parametrize("nets, changes, says", [
    ({"lenet5": "photos"}, {}, "LeNet-5 reads grey (1 channel) images and photos holds RGB (3 channels)"),
    ({"alexnet": "mnist"}, {}, "AlexNet reads RGB (3 channels) images and mnist holds grey (1 channel)"),
    ({"lenet5": "mnist", "zfnet": "photo"}, {}, "pipeline.nets.zfnet is 'photo', but there is no such dataset under data; "
                                                "did you mean 'photos'?"),
    ({"alexnet": "photos"}, {"size": 128}, "data.photos.size is 128, but AlexNet takes 224 px crops of it"),
    ({"lenet5": "photos"}, {"channels": 1, "size": 32}, "data.photos.size is 32, but LeNet-5 takes 28 px images as they are"),
    ({"vgg16": "photos"}, {"classes": ["cat", "dog"]}, "train.vgg16.epochs is 0 with weights: imagenet, but the "
                                                       "classes of photos (cat, dog) are not ImageNet wnids"),
])
def test_validate_refuses_a_net_its_dataset_does_not_fit_in_one_line(validate, nets, changes, says):
    params = committed()
    params["pipeline"]["nets"] = nets
    params["data"]["photos"].update(changes)
    params["train"]["vgg16"]["device"] = "cpu"
    with pytest.raises(UserError) as err:
        validate(params)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_validate_takes_a_net_on_a_dataset_that_fits(validate):
    params = committed()
    params["pipeline"]["nets"] = {"lenet5": "mnist", "alexnet": "photos", "vgg16": "imagenette"}
    params["train"]["alexnet"]["device"] = params["train"]["vgg16"]["device"] = "cpu"
    assert {"pipeline", "data.photos", "train.alexnet", "weights.vgg16"} <= set(validate(params))
    params["data"]["photos"]["classes"] = list(WNIDS)               # wnids: scored at their logits, epochs 0 is fine
    params["pipeline"]["nets"] = {"vgg16": "photos"}
    assert "train.vgg16" in validate(params)
    params["data"]["photos"].update(channels=1, size=28)                # a grey folder of 28 px images: LeNet-5's
    params["train"]["lenet5"]["prototypes"] = "learned"
    params["mine"]["lenet5"]["split"] = "val"                           # an image folder's held-out split
    params["pipeline"]["nets"] = {"lenet5": "photos"}
    assert "train.lenet5" in validate(params)


def class_folders(folder: Path, layout: dict) -> Path:
    """``layout``: {relative class folder: image files in it}. validate lists folders and reads
    no image, so each file is a few placeholder bytes named like an image."""
    for rel, count in layout.items():
        (folder / rel).mkdir(parents=True)
        for i in range(count):
            (folder / rel / f"{i}.png").write_bytes(b"png")
    (folder / "README.txt").write_text("not an image\n")
    return folder


def grey_lenet5_on(params: dict, folder: Path, **keys) -> dict:
    params["data"]["photos"].update(source=str(folder), channels=1, size=28, **keys)
    params["pipeline"]["nets"] = {"lenet5": "photos"}
    params["mine"]["lenet5"]["split"] = "val"
    return params


def test_validate_reads_a_local_folders_class_folders_for_lenet5s_fixed_prototypes(validate, tmp_path):
    """A grey folder of the ten digits "0".."9" (one folder of class folders, one level down)
    takes the paper's prototypes, as the model does; one of other classes is refused."""
    digits = class_folders(tmp_path / "digits", {f"unpacked/{d}": 2 for d in range(10)})
    assert "train.lenet5" in validate(grey_lenet5_on(committed(), digits))
    letters = class_folders(tmp_path / "letters", {f"train/{c}": 2 for c in "abc"} | {f"val/{c}": 1 for c in "abc"})
    params = grey_lenet5_on(committed(), letters)
    del params["data"]["photos"]["val_fraction"]                     # train/ and val/ say the split
    with pytest.raises(UserError) as err:
        validate(params)
    assert ("LeNet-5 on photos: its fixed RBF prototypes are bitmaps of the ten digits, not this dataset's classes "
            "(a, b, c): set train.lenet5.prototypes: learned") in str(err.value) and "\n" not in str(err.value)
    params["train"]["lenet5"]["prototypes"] = "learned"
    assert "train.lenet5" in validate(params)


def test_validate_refuses_epochs_0_on_imagenet_weights_for_a_local_folder_of_plain_classes(validate, tmp_path):
    params = committed()
    params["pipeline"]["nets"] = {"vgg16": "photos"}
    params["train"]["vgg16"]["device"] = "cpu"
    params["data"]["photos"]["source"] = str(class_folders(tmp_path / "plain", {c: 3 for c in PLAIN.names}))
    with pytest.raises(UserError) as err:
        validate(params)
    assert str(err.value).startswith("params.yaml: train.vgg16.epochs is 0 with weights: imagenet, but the classes of "
                                     "photos (cat, dog, fox) are not ImageNet wnids")
    assert "set epochs > 0" in str(err.value) and "\n" not in str(err.value)
    params["data"]["photos"]["source"] = str(class_folders(tmp_path / "wnids", {w: 3 for w in WNIDS}))
    assert "train.vgg16" in validate(params)                          # wnid folders: scored at their logits
    params["data"]["photos"]["source"] = str(tmp_path / "photos.tgz")   # an archive: train@vgg16 refuses it later
    params["data"]["photos"]["md5"] = "0" * 32
    assert "train.vgg16" in validate(params)


@pytest.mark.parametrize("name", ["photos.v2", "my photos", "a/b", "_photos", "-x"])
def test_validate_refuses_a_dataset_name_that_cannot_name_a_stage_or_a_folder(validate, name):
    params = committed()
    params["data"][name] = params["data"].pop("photos")
    params["pipeline"]["datasets"] = ["mnist", name]
    with pytest.raises(UserError) as err:
        validate(params)
    message = str(err.value)
    assert message.startswith(f"params.yaml: data: {name!r} is not a usable dataset name: use letters, digits, _ and - "
                              "only") and "DVC stage name (prepare@<name>)" in message and "\n" not in message
