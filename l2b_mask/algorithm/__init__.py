"""The science steps, in the order a scene meets them: TOA reflectance (`reflectance`), band
selection (`bands`), SpecTf (`model`, and the compiled `l2b_mask.kernels`), streamed inference
(`inference`, with `background` I/O threads), then beyond the cloud (`beyond_cloud`: `cloud_buffer`,
`cloud_shadow`, `geometry`)."""
