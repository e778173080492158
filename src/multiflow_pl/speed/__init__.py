"""Speed, kept beside the method: how the flow's subnets and the frozen backbone compute fast, the same
functions as :mod:`multiflow_pl.models` computes plainly (tested equal to them).

The one interface to the model is the subnet kernel (:class:`~multiflow_pl.models.messages.SubnetKernel`):
:func:`~multiflow_pl.speed.folded_subnet.use_folded_convolutions` gives every cross-view subnet the folded,
batched kernel, whose convolutions run by the library (default), a Winograd convolution or a timed choice
between the two, in float32 or bfloat16, with weights folded and laid out for oneDNN once per scoring block;
subnets with attention messages get the batched attention kernel (``attention_subnet``).
For scoring only: a TorchScript-frozen backbone run on chunks and threads (``fast_backbone``).
"""
