// Log Analytics workspace and workspace-based Application Insights. Local (key) authentication is off:
// the app sends telemetry with its identity (Monitoring Metrics Publisher, see rbac.bicep).
param logAnalyticsName string
param applicationInsightsName string
param location string = resourceGroup().location
param tags object = {}
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    retentionInDays: retentionInDays
    sku: {
      name: 'PerGB2018'
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

output logAnalyticsId string = logAnalytics.id
output applicationInsightsName string = applicationInsights.name

// --- alerts: the app watches itself (issue 16; docs/monitoring.md, runbook per alert in docs/runbook.md) ---

@description('E-mail addresses the alerts go to. E-mail keeps working when the Teams workflow is what broke.')
param alertEmails array = []

@secure()
@description('Teams Workflows URL for alerts (a flow that accepts the Azure Monitor common alert schema). Empty: e-mail only.')
param alertTeamsWorkflowUrl string = ''

@description('Dead-man\'s switch: an enabled rule with no successful run for this many of its periods.')
@minValue(2)
param deadManPeriods int = 3

@description('Backend errors: this many failed runs of one rule with the same error class since its last good run.')
@minValue(2)
param consecutiveErrors int = 3

@description('Held requests: alert when one waits for a person longer than this many hours.')
@minValue(1)
@maxValue(47)
param heldAlertHours int = 4

@description('Teams webhook: alert at this many undelivered cards in 15 minutes.')
@minValue(1)
param webhookFailures int = 1

@description('Push path: alert at this many forged (or stale: a removed subscription\'s stragglers) notifications in an hour. Invalid and poisoned push messages alert at one.')
@minValue(1)
param pushForgedNotifications int = 5

@description('Name of the action group the alerts notify.')
param actionGroupName string = '${applicationInsightsName}-oncall'

// Every alert query is: its thresholds as let statements, the records prelude, then the alert's own query.
// The files are parser-checked and run against demo records by tests/telemetry/test_alert_queries.py.
var records = loadTextContent('monitoring/records.kql')
var thresholds = 'let dead_after_periods = ${deadManPeriods};\nlet consecutive_errors = ${consecutiveErrors};\nlet held_for = ${heldAlertHours}h;\nlet webhook_failures = ${webhookFailures};\nlet push_forged = ${pushForgedNotifications};\n'
// lookbackHours is both the query's own time filter and the rule's overrideQueryTimeRange, so the local
// tests see the range Azure uses. Every query returns only offending rows: the alert fires on any row.
var alertDefinitions = [
  {
    name: 'dead-man'
    displayName: 'xdr-responder: a detection rule has stopped running'
    description: 'An enabled rule had no successful run for ${deadManPeriods} of its periods. Runbook: docs/runbook.md#dead-mans-switch'
    severity: 1
    lookbackHours: 48
    autoMitigate: true
    query: loadTextContent('monitoring/alerts/dead-man.kql')
    anchor: 'dead-mans-switch'
  }
  {
    name: 'startup-failure'
    displayName: 'xdr-responder: the function app failed to start'
    description: 'Start-up or function indexing failed (bad setting, rule file, tenant config, import error). Runbook: docs/runbook.md#start-up-failure'
    severity: 0
    lookbackHours: 1
    autoMitigate: true
    query: loadTextContent('monitoring/alerts/startup-failure.kql')
    anchor: 'start-up-failure'
  }
  {
    name: 'backend-errors'
    displayName: 'xdr-responder: the same backend error on consecutive runs'
    description: 'A rule failed ${consecutiveErrors} runs in a row with the same error class (quota 429, permission 401/403, timeout). Runbook: docs/runbook.md#backend-errors'
    severity: 1
    lookbackHours: 6
    autoMitigate: true
    query: loadTextContent('monitoring/alerts/backend-errors.kql')
    anchor: 'backend-errors'
  }
  {
    name: 'poison'
    displayName: 'xdr-responder: remediation requests in the poison queue'
    description: 'A request failed every delivery and went to the poison queue, or the poison function is failing. Runbook: docs/runbook.md#poison-queue'
    severity: 1
    lookbackHours: 1
    autoMitigate: true
    query: loadTextContent('monitoring/alerts/poison.kql')
    anchor: 'poison-queue'
  }
  {
    name: 'held-too-long'
    displayName: 'xdr-responder: requests waiting for a person too long'
    description: 'A held request (approval, cap, unverifiable) has waited more than ${heldAlertHours} hours. Runbook: docs/runbook.md#held-too-long'
    severity: 2
    lookbackHours: 48
    autoMitigate: true
    query: loadTextContent('monitoring/alerts/held-too-long.kql')
    anchor: 'held-too-long'
  }
  {
    name: 'webhook-failing'
    displayName: 'xdr-responder: Teams cards are not delivered'
    description: 'At least ${webhookFailures} Teams card(s) were not delivered in 15 minutes: on-call hears nothing through Teams. Runbook: docs/runbook.md#teams-webhook-failing'
    severity: 1
    lookbackHours: 1
    autoMitigate: true
    query: loadTextContent('monitoring/alerts/webhook-failing.kql')
    anchor: 'teams-webhook-failing'
  }
  {
    name: 'push-rejected'
    displayName: 'xdr-responder: the push path refuses messages or loses subscriptions'
    description: 'Push messages went to the push poison queue (invalid or given up), ${pushForgedNotifications}+ forged notifications came in an hour, a mailbox\'s subscription failed, or push_poison / push_subscriptions is failing. The scheduled rules still cover the mailboxes, later. Runbook: docs/runbook.md#push-path-alert'
    severity: 2
    lookbackHours: 1
    autoMitigate: true
    query: loadTextContent('monitoring/alerts/push-rejected.kql')
    anchor: 'push-path-alert'
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'xdr-oncall'
    enabled: true
    emailReceivers: map(range(0, length(alertEmails)), i => {
      name: 'email-${i}'
      emailAddress: alertEmails[i]
      useCommonAlertSchema: true
    })
    webhookReceivers: empty(alertTeamsWorkflowUrl) ? [] : [
      {
        name: 'teams-workflow'
        serviceUri: alertTeamsWorkflowUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

// Log alerts scoped to Application Insights read its tables by their classic names (traces, requests).
// https://learn.microsoft.com/azure/templates/microsoft.insights/scheduledqueryrules
resource alerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for a in alertDefinitions: {
  name: '${applicationInsightsName}-${a.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: a.displayName
    description: a.description
    severity: a.severity
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    overrideQueryTimeRange: 'PT${a.lookbackHours}H'
    criteria: {
      allOf: [
        {
          query: '${thresholds}let lookback = ${a.lookbackHours}h;\n${records}\n${a.query}'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: a.autoMitigate
    actions: {
      actionGroups: [
        actionGroup.id
      ]
      customProperties: {
        runbook: 'docs/runbook.md#${a.anchor}'
      }
    }
  }
}]

// --- workbook: the picture on-call and the SOC lead want (queries in monitoring/workbook/*.kql) ---------

var sevenDays = {
  durationMs: 604800000
}
var workbookQueries = [
  {
    name: 'runs-per-rule'
    title: 'Runs per rule'
    visualization: 'timechart'
    query: loadTextContent('monitoring/workbook/runs-per-rule.kql')
  }
  {
    name: 'findings-per-rule'
    title: 'Findings per rule (rows, requests, queued)'
    visualization: 'table'
    query: loadTextContent('monitoring/workbook/findings-per-rule.kql')
  }
  {
    name: 'findings-by-state'
    title: 'Requests by action and state'
    visualization: 'barchart'
    query: loadTextContent('monitoring/workbook/findings-by-state.kql')
  }
  {
    name: 'detection-to-done'
    title: 'Minutes from detection to done'
    visualization: 'table'
    query: loadTextContent('monitoring/workbook/detection-to-done.kql')
  }
  {
    name: 'held-waiting'
    title: 'Held requests waiting for a person'
    visualization: 'table'
    query: loadTextContent('monitoring/workbook/held-waiting.kql')
  }
  {
    name: 'failures-by-class'
    title: 'Failures by class'
    visualization: 'barchart'
    query: loadTextContent('monitoring/workbook/failures-by-class.kql')
  }
  {
    name: 'top-targets'
    title: 'Mailboxes, connectors and accounts most acted on'
    visualization: 'table'
    query: loadTextContent('monitoring/workbook/top-targets.kql')
  }
  {
    name: 'top-senders'
    title: 'Senders most acted on'
    visualization: 'table'
    query: loadTextContent('monitoring/workbook/top-senders.kql')
  }
]
var workbookContent = {
  version: 'Notebook/1.0'
  items: concat([
    {
      type: 1
      name: 'intro'
      content: {
        json: '## xdr-responder\nWhat the app did in the last 7 days, from its telemetry records (docs/monitoring.md). Alerts and what to do: docs/runbook.md.'
      }
    }
  ], map(workbookQueries, q => {
    type: 3
    name: q.name
    content: {
      version: 'KqlItem/1.0'
      query: '${records}\n${q.query}'
      size: 0
      title: q.title
      timeContext: sevenDays
      queryType: 0
      resourceType: 'microsoft.insights/components'
      visualization: q.visualization
    }
  }))
  isLocked: false
}

// https://learn.microsoft.com/azure/templates/microsoft.insights/workbooks
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsName, 'xdr-responder-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'xdr-responder operations'
    category: 'workbook'
    sourceId: applicationInsights.id
    serializedData: string(workbookContent)
  }
}

output actionGroupId string = actionGroup.id
output workbookId string = workbook.id
