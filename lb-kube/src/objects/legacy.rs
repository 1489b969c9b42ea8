//! The legacy MetalLB ConfigMap (`metallb-system/config`, key `config`),
//! mapped to the metallb.io resources the way MetalLB's `configmaptocrs`
//! converter maps it.
