// Key Vault in RBAC mode with purge protection. It holds the Teams Workflows webhook URL, which carries
// its own signature, and the push path's clientState: the app settings are Key Vault references and
// neither value is ever a plain setting or an output.
param name string
param location string = resourceGroup().location
param tags object = {}
param teamsWebhookSecretName string

@secure()
@description('Teams Workflows webhook URL. Empty: no secret is written (put it in later, see docs/deploy.md).')
param teamsWebhookUrl string = ''

param pushClientStateSecretName string = 'push-client-state'

@secure()
@description('The push subscriptions\' clientState (main.bicep generates it). Written only with writePushClientState.')
param pushClientState string = ''

@description('Write the push-client-state secret: the push path is on.')
param writePushClientState bool = false

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enablePurgeProtection: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    publicNetworkAccess: 'Enabled'
  }
}

resource teamsWebhook 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(teamsWebhookUrl)) {
  parent: vault
  name: teamsWebhookSecretName
  properties: {
    value: teamsWebhookUrl
    contentType: 'Teams Workflows webhook URL'
  }
}

// Every deployment with the push path on writes the value it is given as the secret's newest version;
// the app setting's reference has no version, so the app reads the newest.
resource pushClientStateSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (writePushClientState) {
  parent: vault
  name: pushClientStateSecretName
  properties: {
    value: pushClientState
    contentType: 'Graph change notification clientState'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
