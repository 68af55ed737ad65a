//! A data source (a Corpus's `sources`, an Adapter's `dataset`) as a runtime command sees it: a
//! mounted ConfigMap, a path in a mounted claim, a URL, an `s3://` prefix with its credentials
//! in the standard AWS variables.

use crate::error::{Error, Result};
use crate::objects::storage::ClaimMounts;
use hybrid_crds::common::DataSource;
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, Volume, VolumeMount,
};

/// The `--source` argument of source `i`, registering the volumes and Secret it needs.
pub fn source_arg<'s>(
    i: usize,
    source: &'s DataSource,
    claims: &mut ClaimMounts,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
    s3: &mut Option<&'s hybrid_crds::common::S3Source>,
) -> Result<String> {
    if let Some(cm) = &source.config_map {
        let path = format!("/sources/{i}");
        volumes.push(Volume {
            name: format!("source-{i}"),
            config_map: Some(ConfigMapVolumeSource {
                name: cm.name.clone(),
                items: cm.keys.as_ref().filter(|k| !k.is_empty()).map(|keys| {
                    keys.iter()
                        .map(|k| KeyToPath {
                            key: k.clone(),
                            path: k.clone(),
                            mode: None,
                        })
                        .collect()
                }),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: format!("source-{i}"),
            mount_path: path.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        Ok(path)
    } else if let Some(pvc) = &source.persistent_volume_claim {
        let root = claims.claim(&pvc.claim_name, false);
        Ok(format!("{root}{}", pvc.path.trim_end_matches('/')))
    } else if let Some(http) = &source.http {
        if http.headers_secret_ref.is_some() {
            return Err(Error::NotImplemented(format!(
                "sources[{i}].http.headersSecretRef: the runtime's index command cannot send request headers yet"
            )));
        }
        Ok(http.url.clone())
    } else if let Some(src) = &source.s3 {
        // The runtime reads S3 settings from the standard AWS variables, one set per pod.
        if let Some(first) = s3
            && (first.endpoint != src.endpoint
                || first.region != src.region
                || first.credentials_secret_ref != src.credentials_secret_ref)
        {
            return Err(Error::NotImplemented(format!(
                "sources[{i}].s3: S3 sources with different endpoints, regions or credentials in one Corpus"
            )));
        }
        *s3 = Some(src);
        Ok(format!(
            "s3://{}/{}",
            src.bucket,
            src.prefix.trim_start_matches('/')
        ))
    } else {
        Err(Error::InvalidSpec(format!(
            "sources[{i}] sets none of configMap, persistentVolumeClaim, http or s3"
        )))
    }
}

/// The AWS variables the runtime reads S3 settings from (one set per pod).
pub fn s3_env(s3: &hybrid_crds::common::S3Source) -> Vec<EnvVar> {
    let secret = |key: &str| EnvVar {
        name: key.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: s3.credentials_secret_ref.name.clone(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut env = vec![secret("AWS_ACCESS_KEY_ID"), secret("AWS_SECRET_ACCESS_KEY")];
    if let Some(endpoint) = &s3.endpoint {
        env.push(EnvVar {
            name: "AWS_ENDPOINT_URL".to_owned(),
            value: Some(endpoint.clone()),
            ..Default::default()
        });
    }
    if let Some(region) = &s3.region {
        env.push(EnvVar {
            name: "AWS_REGION".to_owned(),
            value: Some(region.clone()),
            ..Default::default()
        });
    }
    env
}
